// Writes tests/vectors/gpp_vectors.json: GPP strings made by the IAB reference library
// (@iabgpp/cmpapi, versions pinned in package.json), so plugin/consent/gpp_us.py and
// plugin/consent/tcfca.py are checked against an independent implementation rather than against
// our own test encoder.
//
// Every US section (usnat and the 20 states) gets a case that allows and one per field that
// denies (each opt-out, each notice the gate reads, GPC, each known-child entry, MSPA service
// provider mode), plus cases for the fields the gate deliberately does not read. tcfcav1 gets
// express, implied, vendor and restriction cases. The older 3.1 encoder adds the layouts it wrote
// differently (usnat Version 1 with the Version 2 lengths; tcfcav1 ranges as 16-bit integers).
// Each vector carries the fields as the same library decodes its string back, and the decision
// cohortkv must reach for it with the default configuration. Dates are fixed, so a rerun
// reproduces the file byte for byte. See README.md beside this file.

import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as current from '@iabgpp/cmpapi';
import * as older from 'cmpapi-3.1';

const OUT = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'gpp_vectors.json');
const PERMUTIVE = 361;
const DATE = new Date(Date.UTC(2024, 2, 1, 0, 0, 0));

const LIBS = [
  { lib: current, version: '3.2.0' },
  { lib: older, version: '3.1.7' },
];

// US sections by id, as the GPP specification numbers them.
const US = {
  7: 'usnat', 8: 'usca', 9: 'usva', 10: 'usco', 11: 'usut', 12: 'usct', 13: 'usfl', 14: 'usmt',
  15: 'usor', 16: 'ustx', 17: 'usde', 18: 'usia', 19: 'usne', 20: 'usnh', 21: 'usnj', 22: 'ustn',
  23: 'usmn', 24: 'usmd', 25: 'usin', 26: 'usky', 27: 'usri',
};
const OPT_OUTS = ['SaleOptOut', 'SharingOptOut', 'TargetedAdvertisingOptOut'];
// The notices the gate reads, and the opt-out each one offers (a notice not given leaves its
// opt-out at 0, "not applicable", as the spec describes).
const NOTICES = {
  SharingNotice: null,
  ProcessingNotice: null,
  SaleOptOutNotice: 'SaleOptOut',
  SharingOptOutNotice: 'SharingOptOut',
  TargetedAdvertisingOptOutNotice: 'TargetedAdvertisingOptOut',
};
// Notices about sensitive data: not read by the gate (docs/privacy.md says why).
const SENSITIVE_NOTICES = ['SensitiveDataLimitUseNotice', 'SensitiveDataProcessingOptOutNotice', 'SensitiveDataOptOutNotice'];
const KNOWN_CHILD = 'KnownChildSensitiveDataConsents';

const range = (lo, hi, step = 1) => {
  const out = [];
  for (let i = lo; i <= hi; i += step) out.push(i);
  return out;
};

// The library's own view of a section: every field it has, with its default value.
function defaults(lib, name) {
  const model = new lib.GppModel();
  model.setFieldValue(name, 'MspaCoveredTransaction', 1);
  return model.toObject()[name];
}

// Notices given, nothing opted out, the publisher in MSPA opt-out option mode, GPC false.
function allowing(fields) {
  const values = {};
  for (const f of Object.keys(fields)) {
    if (f.endsWith('Notice')) values[f] = 1;
    if (OPT_OUTS.includes(f)) values[f] = 2;
  }
  values.MspaCoveredTransaction = 1;
  if ('MspaOptOutOptionMode' in fields) Object.assign(values, { MspaOptOutOptionMode: 1, MspaServiceProviderMode: 2 });
  if ('MspaMode' in fields) values.MspaMode = 1;
  return values;
}

function usCases(name, fields) {
  const base = allowing(fields);
  const reason = (kind) => `gpp_${name}_${kind}`;
  const cases = [
    { name: 'allowed', values: base, reason: reason('not_opted_out') },
    { name: 'library_defaults', values: { MspaCoveredTransaction: 1 }, reason: reason('not_opted_out') },
  ];
  for (const f of OPT_OUTS.filter((f) => f in fields)) {
    cases.push({ name: `${f}_opted_out`, values: { ...base, [f]: 1 }, reason: reason('opted_out') });
  }
  for (const [notice, optOut] of Object.entries(NOTICES).filter(([n]) => n in fields)) {
    const values = { ...base, [notice]: 2, ...(optOut && optOut in fields ? { [optOut]: 0 } : {}) };
    cases.push({ name: `${notice}_not_given`, values, reason: reason('no_notice') });
  }
  for (const f of SENSITIVE_NOTICES.filter((f) => f in fields)) {
    cases.push({ name: `${f}_not_given_is_not_read`, values: { ...base, [f]: 2 }, reason: reason('not_opted_out') });
  }
  if ('Gpc' in fields) {
    cases.push({ name: 'gpc', values: { ...base, Gpc: true }, reason: 'gpp_gpc' });
    cases.push({ name: 'gpc_opted_out_wins', values: { ...base, Gpc: true, SaleOptOut: 1 }, reason: reason('opted_out') });
    cases.push({ name: 'without_gpc_subsection', values: { ...base, GpcSegmentIncluded: false }, reason: reason('not_opted_out') });
  }
  if (KNOWN_CHILD in fields) {
    const kc = fields[KNOWN_CHILD];
    if (Array.isArray(kc)) {
      kc.forEach((_, i) => {
        const entries = kc.map((__, j) => (j === i ? 1 : 2));
        cases.push({ name: `${KNOWN_CHILD}_${i + 1}_no_consent`, values: { ...base, [KNOWN_CHILD]: entries }, reason: reason('known_child') });
      });
      cases.push({ name: `${KNOWN_CHILD}_all_consent`, values: { ...base, [KNOWN_CHILD]: kc.map(() => 2) }, reason: reason('not_opted_out') });
    } else {
      cases.push({ name: `${KNOWN_CHILD}_no_consent`, values: { ...base, [KNOWN_CHILD]: 1 }, reason: reason('known_child') });
      cases.push({ name: `${KNOWN_CHILD}_consent`, values: { ...base, [KNOWN_CHILD]: 2 }, reason: reason('not_opted_out') });
    }
  }
  if ('MspaServiceProviderMode' in fields) {
    const values = { ...base, MspaOptOutOptionMode: 2, MspaServiceProviderMode: 1 };
    cases.push({ name: 'mspa_service_provider_mode', values, reason: 'gpp_mspa_service_provider_mode' });
  }
  if ('MspaMode' in fields) {
    cases.push({ name: 'mspa_service_provider_mode', values: { ...base, MspaMode: 2 }, reason: 'gpp_mspa_service_provider_mode' });
  }
  // Fields the gate does not read: a "no" in them still allows.
  if ('SensitiveDataProcessing' in fields) {
    const sdp = fields.SensitiveDataProcessing.map(() => 1);
    const values = { ...base, SensitiveDataProcessing: sdp };
    if ('SensitiveDataConsentSegmentIncluded' in fields) values.SensitiveDataConsentSegmentIncluded = true;
    cases.push({ name: 'sensitive_data_is_not_read', values, reason: reason('not_opted_out') });
  }
  for (const f of ['PersonalDataConsents', 'AdditionalDataProcessingConsent'].filter((f) => f in fields)) {
    cases.push({ name: `${f}_no_consent_is_not_read`, values: { ...base, [f]: 1 }, reason: reason('not_opted_out') });
  }
  return cases;
}

function encode(lib, name, values) {
  const model = new lib.GppModel();
  for (const [field, value] of Object.entries(values)) model.setFieldValue(name, field, value);
  const gpp = model.encode();
  const back = new lib.GppModel(gpp).toObject()[name];
  for (const [field, value] of Object.entries(values)) {
    if (field.endsWith('Included')) continue;
    if (JSON.stringify(back[field]) !== JSON.stringify(value)) {
      throw new Error(`${name}.${field}: asked ${JSON.stringify(value)}, decoded ${JSON.stringify(back[field])}`);
    }
  }
  return { gpp, section_string: gpp.split('~')[1], fields: back };
}

function usVectors() {
  const out = [];
  const add = (lib, version, sectionId, name, c, extra = {}) => {
    const values = { ...extra, ...c.values };
    const { gpp, section_string, fields } = encode(lib, name, values);
    out.push({
      name: `${name}${extra.Version ? `_v${extra.Version}` : ''}${version === '3.2.0' ? '' : '_cmpapi_3_1'}_${c.name}`,
      section: name,
      section_id: sectionId,
      encoder: version,
      gpp,
      section_string,
      fields,
      expect_allowed: c.reason.endsWith('_not_opted_out'),
      expect_reason: c.reason,
    });
  };
  for (const [id, name] of Object.entries(US)) {
    const cases = usCases(name, defaults(current, name));
    for (const c of cases) add(current, '3.2.0', Number(id), name, c);
    // usnat Version 1 (12 sensitive-data entries, 2 known-child ones) beside Version 2.
    if (name === 'usnat') {
      for (const c of usCases(name, v1Fields())) add(current, '3.2.0', Number(id), name, c, { Version: 1 });
      // The 3.1 encoder wrote Version 1 with the Version 2 lengths.
      for (const c of usCases(name, defaults(older, name))) add(older, '3.1.7', Number(id), name, c);
    }
  }
  return out;
}

function v1Fields() {
  const model = new current.GppModel();
  model.setFieldValue('usnat', 'Version', 1);
  return model.toObject().usnat;
}

// --- tcfcav1 ---

const bits24 = (ids) => range(1, 24).map((i) => ids.includes(i));
const restriction = (purpose, type, vendors) => ({ purpose, type, vendors });

// Expected outcome for two configurations: the default (Purpose 1, which TCF Canada does not
// use, so only vendor 361's consent counts) and purposes [3, 4].
const TCFCA_CASES = [
  {
    name: 'express_consent',
    express: [1, 2, 3, 4, 7], vendorsExpress: [10, PERMUTIVE, 755],
    expect: 'granted', expectP34: 'granted',
  },
  {
    name: 'implied_consent',
    implied: [2, 3, 4, 7], vendorsImplied: [PERMUTIVE],
    expect: 'granted', expectP34: 'granted',
  },
  {
    name: 'purpose_1_bit_unset',
    express: [3, 4], vendorsExpress: [PERMUTIVE],
    expect: 'granted', expectP34: 'granted',
  },
  {
    name: 'express_purposes_implied_vendor',
    express: [3, 4], vendorsImplied: [PERMUTIVE],
    expect: 'granted', expectP34: 'vendor_denied',
  },
  {
    name: 'purpose_3_missing',
    express: [1, 2, 4], vendorsExpress: [PERMUTIVE],
    expect: 'granted', expectP34: 'purpose_denied',
  },
  {
    name: 'purpose_3_express_purpose_4_implied',
    express: [3], implied: [4], vendorsExpress: [PERMUTIVE], vendorsImplied: [PERMUTIVE],
    expect: 'granted', expectP34: 'granted',
  },
  {
    name: 'no_vendor_361',
    express: [1, 2, 3, 4], vendorsExpress: [10, 360, 362, 755], implied: [3, 4], vendorsImplied: [360],
    expect: 'vendor_denied', expectP34: 'vendor_denied',
  },
  { name: 'empty', expect: 'vendor_denied', expectP34: 'purpose_denied' },
  {
    name: 'bitfield_vendors_with_361',
    express: [3, 4], vendorsExpress: range(1, 399, 2),
    expect: 'granted', expectP34: 'granted',
  },
  {
    name: 'bitfield_vendors_without_361',
    express: [3, 4], vendorsExpress: range(2, 400, 2), vendorsImplied: range(2, 500, 2),
    expect: 'vendor_denied', expectP34: 'vendor_denied',
  },
  {
    name: 'range_vendors_high_ids',
    implied: [3, 4], vendorsImplied: [PERMUTIVE, 1000, ...range(4000, 4010), 65000],
    expect: 'granted', expectP34: 'granted',
  },
  {
    name: 'restriction_not_allowed_purpose_1',
    express: [3, 4], vendorsExpress: [PERMUTIVE], restrictions: [restriction(1, 0, [PERMUTIVE])],
    expect: 'restricted', expectP34: 'granted',
  },
  {
    name: 'restriction_not_allowed_purpose_3',
    express: [3, 4], vendorsExpress: [PERMUTIVE], restrictions: [restriction(3, 0, range(300, 420))],
    expect: 'granted', expectP34: 'restricted',
  },
  {
    name: 'restriction_require_express_on_implied',
    implied: [3, 4], vendorsImplied: [PERMUTIVE], restrictions: [restriction(3, 1, [PERMUTIVE])],
    expect: 'granted', expectP34: 'purpose_denied',
  },
  {
    name: 'restriction_require_implied_on_express',
    express: [3, 4], vendorsExpress: [PERMUTIVE], restrictions: [restriction(4, 2, [PERMUTIVE, 755])],
    expect: 'granted', expectP34: 'purpose_denied',
  },
  {
    name: 'restriction_require_express_purpose_1_vendor_implied',
    implied: [3, 4], vendorsImplied: [PERMUTIVE], restrictions: [restriction(1, 1, [PERMUTIVE])],
    expect: 'vendor_denied', expectP34: 'granted',
  },
  {
    name: 'restrictions_on_other_vendors',
    express: [3, 4], vendorsExpress: [PERMUTIVE],
    restrictions: [restriction(1, 0, [10, 755]), restriction(3, 0, range(1, 359, 2))],
    expect: 'granted', expectP34: 'granted',
  },
];

function tcfcaVectors() {
  const out = [];
  for (const { lib, version } of LIBS) {
    for (const c of TCFCA_CASES) {
      const model = new lib.GppModel();
      const set = (field, value) => model.setFieldValue('tcfcav1', field, value);
      set('CmpId', 10);
      set('CmpVersion', 2);
      set('ConsentScreen', 1);
      set('VendorListVersion', 48);
      set('PurposesExpressConsent', bits24(c.express ?? []));
      set('PurposesImpliedConsent', bits24(c.implied ?? []));
      set('VendorExpressConsent', c.vendorsExpress ?? []);
      set('VendorImpliedConsent', c.vendorsImplied ?? []);
      set('PubRestrictions', (c.restrictions ?? []).map((r) => new lib.RangeEntry(r.purpose, r.type, r.vendors)));
      // Last: the 3.1 encoder stamps both dates with the current time whenever another field is set.
      set('Created', DATE);
      set('LastUpdated', DATE);
      const gpp = model.encode();
      const back = new lib.GppModel(gpp).toObject().tcfcav1;
      const restrictions = back.PubRestrictions.map((r) => restriction(r.key, r.type, r.ids));
      const asked = (c.restrictions ?? []).map((r) => restriction(r.purpose, r.type, r.vendors));
      if (JSON.stringify(restrictions) !== JSON.stringify(asked)) throw new Error(`${c.name}: restrictions differ`);
      if (JSON.stringify(back.VendorExpressConsent) !== JSON.stringify(c.vendorsExpress ?? [])) throw new Error(`${c.name}: vendors differ`);
      if (JSON.stringify(back.VendorImpliedConsent) !== JSON.stringify(c.vendorsImplied ?? [])) throw new Error(`${c.name}: implied vendors differ`);
      out.push({
        name: `tcfcav1${version === '3.2.0' ? '' : '_cmpapi_3_1'}_${c.name}`,
        section: 'tcfcav1',
        section_id: 5,
        encoder: version,
        gpp,
        section_string: gpp.split('~')[1],
        fields: {
          Version: back.Version,
          CreatedDeciseconds: Math.round(new Date(back.Created).getTime() / 100),
          CmpId: back.CmpId,
          CmpVersion: back.CmpVersion,
          ConsentScreen: back.ConsentScreen,
          ConsentLanguage: back.ConsentLanguage,
          VendorListVersion: back.VendorListVersion,
          TcfPolicyVersion: back.TcfPolicyVersion,
          UseNonStandardStacks: back.UseNonStandardStacks,
          PurposesExpressConsent: range(1, 24).filter((i) => back.PurposesExpressConsent[i - 1]),
          PurposesImpliedConsent: range(1, 24).filter((i) => back.PurposesImpliedConsent[i - 1]),
          VendorExpressConsent: back.VendorExpressConsent,
          VendorImpliedConsent: back.VendorImpliedConsent,
          PubRestrictions: restrictions,
        },
        expect_allowed: c.expect === 'granted',
        expect_reason: `gpp_tcfca_${c.expect}`,
        expect_reason_purposes_3_4: `gpp_tcfca_${c.expectP34}`,
      });
    }
  }
  // The two encoders must disagree somewhere, or the older layout is not exercised.
  const strings = (v) => out.filter((x) => x.encoder === v).map((x) => x.section_string);
  const [a, b] = [strings('3.2.0'), strings('3.1.7')];
  if (a.every((s, i) => s === b[i])) throw new Error('3.1 and 3.2 wrote identical tcfcav1 strings');
  return out;
}

const vectors = [...usVectors(), ...tcfcaVectors()];
const names = new Set(vectors.map((v) => v.name));
if (names.size !== vectors.length) throw new Error('duplicate vector names');
writeFileSync(OUT, JSON.stringify(vectors, null, 1) + '\n');
console.log(`wrote ${vectors.length} vectors to ${OUT}`);
