// Writes tests/vectors/tcf_vectors.json: TC strings made by the IAB reference encoder
// (@iabtechlabtcf/core, version pinned in package.json), so plugin/tcf.py is checked against
// an independent implementation rather than against our own test encoder.
//
// Needs no network beyond npm: the Global Vendor List is a small synthetic one built below
// (the encoder drops consent for vendors it cannot find in the GVL). Dates are fixed, so a
// rerun reproduces the file byte for byte. See README.md beside this file.

import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { GVL, PurposeRestriction, TCModel, TCString } from '@iabtechlabtcf/core';

// Output path: first argument, else tests/vectors/tcf_vectors.json next to this script's folder.
const OUT = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'tcf_vectors.json');
const PERMUTIVE = 361;
const DATE = new Date(Date.UTC(2024, 2, 1, 12, 0, 0));

const range = (lo, hi, step = 1) => {
  const out = [];
  for (let i = lo; i <= hi; i += step) out.push(i);
  return out;
};
const ALL_PURPOSES = range(1, 11);

// Publisher restriction types (RestrictionType in the reference library).
const NOT_ALLOWED = 0;
const REQUIRE_CONSENT = 1;
const REQUIRE_LI = 2;
// The order plugin/tcf.py resolves several restrictions on one purpose and vendor in (the spec
// allows one; a contradiction must never loosen the gate): most restrictive for a vendor that
// relies on consent first. Type 3 is undefined, and the reference encoder cannot write it.
const MOST_RESTRICTIVE_FIRST = [NOT_ALLOWED, 3, REQUIRE_LI, REQUIRE_CONSENT];

// A publisher restriction as a case asks for it and as a vector records it.
const restriction = (purpose, type, vendors) => ({ purpose, type, vendors });

// name, purposes, vendors, extra options. Vendor sets are chosen so that the encoder (which
// picks the shorter vendor encoding by itself) produces both bitfield and range sections, for
// vendor consent and for vendor legitimate interest alike. Publisher restrictions are encoded as
// range entries; the encoder merges ids into one range only where no GVL vendor lies between
// them, so a restriction covering a span of ids lists every id of it.
const CASES = [
  { name: 'range_single_361_all_purposes', purposes: ALL_PURPOSES, vendors: [PERMUTIVE] },
  { name: 'range_single_361_purpose1_off', purposes: range(2, 11), vendors: [PERMUTIVE] },
  { name: 'range_without_361_gap', purposes: ALL_PURPOSES, vendors: [...range(1, 360), ...range(362, 800)] },
  { name: 'range_361_ends_a_range', purposes: [1, 2, 3, 4], vendors: [...range(350, 361), 700] },
  { name: 'range_361_starts_a_range', purposes: [1], vendors: [20, ...range(361, 370)] },
  { name: 'range_contiguous_300_420', purposes: [1, 3, 4], vendors: range(300, 420) },
  { name: 'range_high_vendor_ids', purposes: ALL_PURPOSES, vendors: [PERMUTIVE, 1000, 2500, ...range(4000, 4010), 65000] },
  { name: 'range_high_vendor_ids_without_361', purposes: ALL_PURPOSES, vendors: [360, 362, 5000, 40000] },
  { name: 'bitfield_odd_vendors_with_361', purposes: [1, 2, 3, 4], vendors: range(1, 399, 2) },
  { name: 'bitfield_even_vendors_without_361', purposes: [1, 2, 3, 4], vendors: range(2, 400, 2) },
  { name: 'bitfield_purpose1_off', purposes: range(2, 10), vendors: [...range(2, 400, 2), PERMUTIVE] },
  { name: 'bitfield_361_only_purpose_1', purposes: [1], vendors: range(301, 361, 2) },
  { name: 'bitfield_small_max_vendor', purposes: [1, 2], vendors: [1, 2, 3, 10, 44] },
  { name: 'bitfield_high_vendor_ids', purposes: ALL_PURPOSES, vendors: range(1, 3000).filter((v) => v % 3 !== 0) },
  { name: 'bitfield_high_without_361', purposes: ALL_PURPOSES, vendors: range(1, 3000).filter((v) => v % 19 !== 0) },
  { name: 'empty_consent', purposes: [], vendors: [] },
  {
    name: 'service_specific_many_purposes',
    purposes: ALL_PURPOSES,
    vendors: [PERMUTIVE, 755],
    serviceSpecific: true,
    specialFeatures: [1, 2],
    purposesLI: [2, 7, 8, 9, 10, 11],
  },
  {
    name: 'for_vendors_with_publisher_tc',
    purposes: [1, 7],
    vendors: [PERMUTIVE],
    forVendors: true,
    publisherConsents: [1, 2],
  },
  { name: 'vendor_li_bitfield', purposes: ALL_PURPOSES, vendors: [PERMUTIVE], vendorsLI: range(1, 400, 3) },
  {
    name: 'vendor_li_range_with_361',
    purposes: ALL_PURPOSES,
    vendors: [PERMUTIVE, 755],
    vendorsLI: [...range(100, 200), PERMUTIVE, 5000],
  },
  // Publisher restrictions, in service-specific strings (the reference library holds that they
  // apply only there).
  {
    name: 'restriction_not_allowed_p1_361',
    purposes: ALL_PURPOSES,
    vendors: [PERMUTIVE, 755],
    serviceSpecific: true,
    restrictions: [restriction(1, NOT_ALLOWED, [PERMUTIVE])],
  },
  {
    name: 'restriction_require_consent_p1_361',
    purposes: ALL_PURPOSES,
    vendors: [PERMUTIVE],
    serviceSpecific: true,
    restrictions: [restriction(1, REQUIRE_CONSENT, [PERMUTIVE])],
  },
  {
    name: 'restriction_require_consent_p1_361_purpose1_off',
    purposes: range(2, 11),
    vendors: [PERMUTIVE],
    serviceSpecific: true,
    restrictions: [restriction(1, REQUIRE_CONSENT, [PERMUTIVE])],
  },
  {
    name: 'restriction_require_li_p1_361',
    purposes: ALL_PURPOSES,
    vendors: [PERMUTIVE],
    vendorsLI: [PERMUTIVE],
    serviceSpecific: true,
    restrictions: [restriction(1, REQUIRE_LI, [PERMUTIVE])],
  },
  {
    name: 'restrictions_on_other_vendors_and_purposes_only',
    purposes: ALL_PURPOSES,
    vendors: [10, PERMUTIVE, 755],
    serviceSpecific: true,
    restrictions: [
      restriction(1, NOT_ALLOWED, [10, 755]),
      restriction(2, NOT_ALLOWED, [PERMUTIVE]),
      restriction(7, NOT_ALLOWED, [PERMUTIVE, 755]),
      restriction(1, REQUIRE_CONSENT, [PERMUTIVE - 1, PERMUTIVE + 1]),
    ],
  },
  {
    name: 'restriction_range_covers_361',
    purposes: ALL_PURPOSES,
    vendors: [PERMUTIVE],
    serviceSpecific: true,
    restrictions: [restriction(1, NOT_ALLOWED, range(300, 420))],
  },
  {
    name: 'restriction_range_ends_below_361',
    purposes: ALL_PURPOSES,
    vendors: [PERMUTIVE],
    serviceSpecific: true,
    restrictions: [restriction(1, NOT_ALLOWED, range(300, PERMUTIVE - 1))],
  },
  {
    name: 'several_restrictions_require_consent_p1_361',
    purposes: ALL_PURPOSES,
    vendors: [10, PERMUTIVE, 755],
    vendorsLI: [10, 755],
    serviceSpecific: true,
    restrictions: [
      restriction(2, NOT_ALLOWED, range(10, PERMUTIVE)),
      restriction(1, REQUIRE_CONSENT, range(PERMUTIVE, 755)),
      restriction(3, REQUIRE_LI, [PERMUTIVE]),
      restriction(1, NOT_ALLOWED, [10]),
    ],
  },
  {
    name: 'conflicting_restrictions_p1_361_types_1_and_2',
    purposes: ALL_PURPOSES,
    vendors: [PERMUTIVE],
    serviceSpecific: true,
    restrictions: [restriction(1, REQUIRE_CONSENT, [PERMUTIVE]), restriction(1, REQUIRE_LI, [PERMUTIVE])],
  },
  // Publisher TC segments (type 3), as a CMP hands a string to vendors (isForVendors) or as a
  // service-specific string always carries one: what `[consent] tcf_basis = "publisher"` reads.
  {
    name: 'publisher_p1_without_vendor_361',
    purposes: [],
    vendors: [755],
    forVendors: true,
    publisherConsents: [1],
  },
  {
    name: 'publisher_p1_li_only_vendor_361_consented',
    purposes: [1],
    vendors: [PERMUTIVE],
    forVendors: true,
    publisherConsents: [2, 3],
    publisherLI: [1, 7],
  },
  {
    name: 'publisher_custom_purposes',
    purposes: [1],
    vendors: [PERMUTIVE],
    forVendors: true,
    publisherConsents: [1, 4],
    customPurposes: 3,
    customConsents: [1, 3],
    customLI: [2],
  },
  {
    name: 'service_specific_publisher_p1_only',
    purposes: [],
    vendors: [],
    serviceSpecific: true,
    publisherConsents: [1],
  },
  {
    name: 'publisher_p1_restriction_not_allowed_p1_361',
    purposes: ALL_PURPOSES,
    vendors: [PERMUTIVE],
    serviceSpecific: true,
    publisherConsents: [1],
    restrictions: [restriction(1, NOT_ALLOWED, [PERMUTIVE])],
  },
  {
    name: 'conflicting_restrictions_p1_361_types_1_and_0',
    purposes: ALL_PURPOSES,
    vendors: [PERMUTIVE],
    serviceSpecific: true,
    restrictions: [restriction(1, REQUIRE_CONSENT, [PERMUTIVE]), restriction(1, NOT_ALLOWED, range(350, 370))],
  },
];

// Every synthetic vendor declares every purpose for consent and for legitimate interest, all of
// them flexible: the encoder silently drops a publisher restriction that a vendor's declarations
// do not allow (type 1 needs a flexible legitimate-interest purpose, type 2 a flexible consent
// one), and a vendor LI bit for a vendor without legitimate-interest purposes.
function syntheticGvl(vendorIds) {
  const named = (ids, kind) =>
    Object.fromEntries(ids.map((id) => [id, { id, name: `${kind} ${id}`, description: '' }]));
  const vendors = {};
  for (const id of vendorIds) {
    vendors[id] = {
      id,
      name: `Vendor ${id}`,
      purposes: ALL_PURPOSES,
      legIntPurposes: ALL_PURPOSES,
      flexiblePurposes: ALL_PURPOSES,
      specialPurposes: [1],
      features: [],
      specialFeatures: [1, 2],
      policyUrl: 'https://example.invalid/privacy',
    };
  }
  return new GVL({
    gvlSpecificationVersion: 3,
    vendorListVersion: 48,
    tcfPolicyVersion: 4,
    lastUpdated: DATE.toISOString(),
    purposes: named(ALL_PURPOSES, 'Purpose'),
    specialPurposes: named([1, 2, 3], 'Special purpose'),
    features: named([1, 2, 3], 'Feature'),
    specialFeatures: named([1, 2], 'Special feature'),
    stacks: {},
    dataCategories: {},
    vendors,
  });
}

function base64UrlToBits(segment) {
  const dict = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  return [...segment].map((c) => dict.indexOf(c).toString(2).padStart(6, '0')).join('');
}

const sorted = (iterable) => [...iterable].sort((a, b) => a - b);
const sameList = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
const ids = (vector) => {
  const out = [];
  vector.forEach((on, id) => on && out.push(id));
  return sorted(out);
};

const allVendors = new Set(
  CASES.flatMap((c) => [...c.vendors, ...(c.vendorsLI ?? []), ...(c.restrictions ?? []).flatMap((r) => r.vendors)]),
);
const gvl = syntheticGvl(sorted(allVendors));
await gvl.readyPromise;

const vectors = CASES.map((c) => {
  const model = new TCModel(gvl);
  model.cmpId = 10;
  model.cmpVersion = 2;
  model.consentScreen = 1;
  model.publisherCountryCode = 'DE';
  model.isServiceSpecific = !!c.serviceSpecific;
  model.purposeConsents.set(c.purposes);
  model.vendorConsents.set(c.vendors);
  model.vendorLegitimateInterests.set(c.vendorsLI ?? []);
  for (const r of c.restrictions ?? []) {
    const pr = new PurposeRestriction(r.purpose, r.type);
    for (const vendorId of r.vendors) model.publisherRestrictions.add(vendorId, pr);
  }
  model.specialFeatureOptins.set(c.specialFeatures ?? []);
  model.purposeLegitimateInterests.set(c.purposesLI ?? []);
  model.publisherConsents.set(c.publisherConsents ?? []);
  model.publisherLegitimateInterests.set(c.publisherLI ?? []);
  if (c.customPurposes) {
    model.numCustomPurposes = c.customPurposes;
    model.publisherCustomConsents.set(c.customConsents ?? []);
    model.publisherCustomLegitimateInterests.set(c.customLI ?? []);
  }
  model.created = DATE;
  model.lastUpdated = DATE;

  const tcString = TCString.encode(model, c.forVendors ? { isForVendors: true } : undefined);

  // The reference decoder must give back exactly what we asked for; otherwise the GVL dropped
  // something and the vector would not say what its name says.
  const back = TCString.decode(tcString);
  if (!sameList(ids(back.purposeConsents), sorted(c.purposes))) throw new Error(`${c.name}: purposes differ`);
  if (!sameList(ids(back.vendorConsents), sorted(c.vendors))) throw new Error(`${c.name}: vendors differ`);
  const vendorsLI = ids(back.vendorLegitimateInterests);
  if (!sameList(vendorsLI, sorted(c.vendorsLI ?? []))) throw new Error(`${c.name}: vendor LI differs`);
  // Restrictions in encoded order, each with every vendor id its range entries cover.
  const restrictions = back.publisherRestrictions
    .getRestrictions()
    .map((pr) => restriction(pr.purposeId, pr.restrictionType, back.publisherRestrictions.getVendors(pr)));
  const asked = (c.restrictions ?? []).map((r) => restriction(r.purpose, r.type, sorted(r.vendors)));
  if (JSON.stringify(restrictions) !== JSON.stringify(asked)) throw new Error(`${c.name}: restrictions differ`);
  // The publisher TC segment: present when the string has a segment of type 3 (its first three
  // bits); the reference decoder must give back the purposes asked for.
  const publisherSegment = tcString.split('.').slice(1).some((s) => base64UrlToBits(s).startsWith('011'));
  if (publisherSegment !== !!(c.forVendors || c.serviceSpecific)) throw new Error(`${c.name}: publisher segment`);
  const pubConsent = ids(back.publisherConsents);
  const pubLI = ids(back.publisherLegitimateInterests);
  const customConsent = ids(back.publisherCustomConsents);
  const customLI = ids(back.publisherCustomLegitimateInterests);
  if (publisherSegment) {
    if (!sameList(pubConsent, sorted(c.publisherConsents ?? []))) throw new Error(`${c.name}: publisher consents`);
    if (!sameList(pubLI, sorted(c.publisherLI ?? []))) throw new Error(`${c.name}: publisher LI`);
    if (!sameList(customConsent, sorted(c.customConsents ?? []))) throw new Error(`${c.name}: custom consents`);
    if (!sameList(customLI, sorted(c.customLI ?? []))) throw new Error(`${c.name}: custom LI`);
  }

  // Core segment bits: 213 bits of fixed fields, then the vendor consent section, then the
  // vendor LI section; each section is MaxVendorId(16), IsRangeEncoding(1), then the vendors.
  const core = tcString.split('.')[0];
  const bits = base64UrlToBits(core);
  const encoding = bits[213 + 16] === '1' ? 'range' : 'bitfield';
  const liStart = 213 + back.vendorConsents.bitLength;
  const liEncoding = bits[liStart + 16] === '1' ? 'range' : 'bitfield';
  if (parseInt(bits.slice(liStart, liStart + 16), 2) !== back.vendorLegitimateInterests.maxId) {
    throw new Error(`${c.name}: vendor LI section not where expected`);
  }
  // Several restrictions on one purpose and vendor: the most restrictive one (see above).
  const on361p1 = new Set(
    restrictions.filter((r) => r.purpose === 1 && r.vendors.includes(PERMUTIVE)).map((r) => r.type),
  );
  const restriction361p1 = MOST_RESTRICTIVE_FIRST.find((t) => on361p1.has(t)) ?? null;

  return {
    name: c.name,
    tc_string: tcString,
    purposes_consent: sorted(c.purposes),
    vendor_consents: sorted(c.vendors),
    max_vendor_id: back.vendorConsents.maxId,
    encoding,
    vendor_legitimate_interests: vendorsLI,
    vendor_li_max_id: back.vendorLegitimateInterests.maxId,
    vendor_li_encoding: liEncoding,
    restrictions,
    expect_restriction_361_p1: restriction361p1,
    // Type 0 denies; type 2 denies too, as Purpose 1 can never rest on legitimate interest;
    // type 1 requires the Purpose 1 consent asked for anyway.
    expect_allowed:
      c.purposes.includes(1) &&
      c.vendors.includes(PERMUTIVE) &&
      (restriction361p1 === null || restriction361p1 === REQUIRE_CONSENT),
    publisher_segment: publisherSegment,
    publisher_purposes_consent: publisherSegment ? pubConsent : [],
    publisher_purposes_li_transparency: publisherSegment ? pubLI : [],
    publisher_num_custom_purposes: publisherSegment ? (c.customPurposes ?? 0) : 0,
    publisher_custom_purposes_consent: publisherSegment ? customConsent : [],
    publisher_custom_purposes_li_transparency: publisherSegment ? customLI : [],
    // tcf_basis = "publisher": Purpose 1 consented in the publisher segment (legitimate
    // interest does not count), vendor 361 not needed; a restriction denies as above.
    expect_allowed_publisher_basis:
      publisherSegment &&
      (c.publisherConsents ?? []).includes(1) &&
      (restriction361p1 === null || restriction361p1 === REQUIRE_CONSENT),
    cmp_id: back.cmpId,
    cmp_version: back.cmpVersion,
    consent_screen: back.consentScreen,
    consent_language: back.consentLanguage,
    vendor_list_version: back.vendorListVersion,
    policy_version: back.policyVersion,
    is_service_specific: back.isServiceSpecific,
    special_feature_optins: ids(back.specialFeatureOptins),
    purposes_li_transparency: ids(back.purposeLegitimateInterests),
    publisher_cc: back.publisherCountryCode,
    created_ds: Math.round(DATE.getTime() / 100),
  };
});

const kinds = new Set(vectors.map((v) => v.encoding));
if (kinds.size !== 2) throw new Error(`expected both vendor encodings, got ${[...kinds]}`);
const liKinds = new Set(vectors.filter((v) => v.vendor_legitimate_interests.length).map((v) => v.vendor_li_encoding));
if (liKinds.size !== 2) throw new Error(`expected both vendor LI encodings, got ${[...liKinds]}`);
const on361 = new Set(vectors.filter((v) => v.restrictions.length).map((v) => v.expect_restriction_361_p1));
for (const t of [null, NOT_ALLOWED, REQUIRE_CONSENT, REQUIRE_LI]) {
  if (!on361.has(t)) throw new Error(`no restricted case with ${t} on Purpose 1 for ${PERMUTIVE}`);
}
// Both bases must disagree somewhere, each way, and a publisher segment must carry custom purposes.
if (!vectors.some((v) => v.expect_allowed_publisher_basis && !v.expect_allowed)) throw new Error('no publisher-only grant');
if (!vectors.some((v) => !v.expect_allowed_publisher_basis && v.expect_allowed && v.publisher_segment)) {
  throw new Error('no vendor-only grant with a publisher segment');
}
if (!vectors.some((v) => v.publisher_custom_purposes_consent.length)) throw new Error('no custom purposes');

writeFileSync(OUT, JSON.stringify(vectors, null, 2) + '\n');
console.log(`wrote ${vectors.length} vectors to ${OUT}`);
