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

import { GVL, TCModel, TCString } from '@iabtechlabtcf/core';

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

// name, purposes, vendors, extra options. Vendor sets are chosen so that the encoder (which
// picks the shorter vendor encoding by itself) produces both bitfield and range sections.
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
];

function syntheticGvl(vendorIds) {
  const named = (ids, kind) =>
    Object.fromEntries(ids.map((id) => [id, { id, name: `${kind} ${id}`, description: '' }]));
  const vendors = {};
  for (const id of vendorIds) {
    vendors[id] = {
      id,
      name: `Vendor ${id}`,
      purposes: ALL_PURPOSES,
      legIntPurposes: [],
      flexiblePurposes: [],
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

const allVendors = new Set(CASES.flatMap((c) => c.vendors));
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
  model.specialFeatureOptins.set(c.specialFeatures ?? []);
  model.purposeLegitimateInterests.set(c.purposesLI ?? []);
  model.publisherConsents.set(c.publisherConsents ?? []);
  model.created = DATE;
  model.lastUpdated = DATE;

  const tcString = TCString.encode(model, c.forVendors ? { isForVendors: true } : undefined);

  // The reference decoder must give back exactly what we asked for; otherwise the GVL dropped
  // something and the vector would not say what its name says.
  const back = TCString.decode(tcString);
  const purposes = [];
  back.purposeConsents.forEach((on, id) => on && purposes.push(id));
  const vendorIds = [];
  back.vendorConsents.forEach((on, id) => on && vendorIds.push(id));
  if (!sameList(sorted(purposes), sorted(c.purposes))) throw new Error(`${c.name}: purposes differ`);
  if (!sameList(sorted(vendorIds), sorted(c.vendors))) throw new Error(`${c.name}: vendors differ`);

  // Core segment bits: 213 bits of fixed fields, MaxVendorId(16), then IsRangeEncoding(1).
  const core = tcString.split('.')[0];
  const bits = base64UrlToBits(core);
  const encoding = bits[213 + 16] === '1' ? 'range' : 'bitfield';
  const liPurposes = [];
  back.purposeLegitimateInterests.forEach((on, id) => on && liPurposes.push(id));
  const specialFeatures = [];
  back.specialFeatureOptins.forEach((on, id) => on && specialFeatures.push(id));

  return {
    name: c.name,
    tc_string: tcString,
    purposes_consent: sorted(c.purposes),
    vendor_consents: sorted(c.vendors),
    max_vendor_id: back.vendorConsents.maxId,
    encoding,
    expect_allowed: c.purposes.includes(1) && c.vendors.includes(PERMUTIVE),
    cmp_id: back.cmpId,
    cmp_version: back.cmpVersion,
    consent_screen: back.consentScreen,
    consent_language: back.consentLanguage,
    vendor_list_version: back.vendorListVersion,
    policy_version: back.policyVersion,
    is_service_specific: back.isServiceSpecific,
    special_feature_optins: sorted(specialFeatures),
    purposes_li_transparency: sorted(liPurposes),
    publisher_cc: back.publisherCountryCode,
    created_ds: Math.round(DATE.getTime() / 100),
  };
});

const kinds = new Set(vectors.map((v) => v.encoding));
if (kinds.size !== 2) throw new Error(`expected both vendor encodings, got ${[...kinds]}`);

writeFileSync(OUT, JSON.stringify(vectors, null, 2) + '\n');
console.log(`wrote ${vectors.length} vectors to ${OUT}`);
