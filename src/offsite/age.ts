import { createCipheriv, createDecipheriv, createHmac, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import { OffsiteError } from './s3.js';

/**
 * The age file format (age-encryption.org/v1) with X25519 recipients, on node:crypto alone: X25519,
 * HKDF-SHA256, HMAC-SHA256 and ChaCha20-Poly1305 in 64 KiB STREAM chunks. Files it writes decrypt with the
 * `age` tool, and it decrypts what `age -r` writes (test/offsite/age.test.ts checks both ways).
 */

const INTRO = 'age-encryption.org/v1';
const CHUNK = 64 * 1024;
const TAG = 16;

// --- bech32 (BIP 173), as age encodes its keys; age allows strings longer than BIP 173's 90 characters ---
const CHARSET = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
const GEN = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
function polymod(values: number[]): number {
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= GEN[i] ?? 0;
  }
  return chk >>> 0;
}
const hrpExpand = (hrp: string): number[] => [...[...hrp].map((c) => c.charCodeAt(0) >> 5), 0, ...[...hrp].map((c) => c.charCodeAt(0) & 31)];
function convertBits(data: Iterable<number>, from: number, to: number, pad: boolean): number[] {
  let acc = 0;
  let bits = 0;
  const out: number[] = [];
  const maxv = (1 << to) - 1;
  for (const v of data) {
    acc = (acc << from) | v;
    bits += from;
    while (bits >= to) {
      bits -= to;
      out.push((acc >> bits) & maxv);
    }
  }
  if (pad && bits > 0) out.push((acc << (to - bits)) & maxv);
  else if (!pad && (bits >= from || ((acc << (to - bits)) & maxv) !== 0)) throw new Error('invalid padding');
  return out;
}
function bech32Encode(hrp: string, data: Buffer): string {
  const words = convertBits(data, 8, 5, true);
  const mod = polymod([...hrpExpand(hrp), ...words, 0, 0, 0, 0, 0, 0]) ^ 1;
  const checksum = Array.from({ length: 6 }, (_, i) => (mod >>> (5 * (5 - i))) & 31);
  return `${hrp}1${[...words, ...checksum].map((w) => CHARSET[w]).join('')}`;
}
function bech32Decode(s: string): { hrp: string; data: Buffer } {
  const lower = s.toLowerCase();
  if (s !== lower && s !== s.toUpperCase()) throw new Error('mixed case');
  const pos = lower.lastIndexOf('1');
  if (pos < 1 || pos + 7 > lower.length) throw new Error('no separator');
  const hrp = lower.slice(0, pos);
  const words = [...lower.slice(pos + 1)].map((c) => {
    const i = CHARSET.indexOf(c);
    if (i < 0) throw new Error(`bad character ${c}`);
    return i;
  });
  if (polymod([...hrpExpand(hrp), ...words]) !== 1) throw new Error('bad checksum');
  return { hrp, data: Buffer.from(convertBits(words.slice(0, -6), 5, 8, false)) };
}

// --- keys ---
const b64 = (b: Buffer): string => b.toString('base64').replace(/=+$/, '');
const unb64 = (s: string): Buffer => {
  if (!/^[A-Za-z0-9+/]*$/.test(s)) throw new Error('not unpadded base64');
  return Buffer.from(s, 'base64');
};
function privateKey(raw: Buffer): KeyObject {
  return createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: raw.toString('base64url'), x: publicOf(raw).toString('base64url') }, format: 'jwk' });
}
function publicKey(raw: Buffer): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: raw.toString('base64url') }, format: 'jwk' });
}
function publicOf(secret: Buffer): Buffer {
  // Node derives the public half when importing PKCS#8 without it.
  const pkcs8 = Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), secret]);
  const jwk = createPublicKey(createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' })).export({ format: 'jwk' });
  return Buffer.from(String(jwk.x), 'base64url');
}
const x25519 = (secret: Buffer, pub: Buffer): Buffer => diffieHellman({ privateKey: privateKey(secret), publicKey: publicKey(pub) });

/** An X25519 identity (`AGE-SECRET-KEY-1…`) and its recipient (`age1…`). */
export function generateIdentity(): { identity: string; recipient: string } {
  const { privateKey: k } = generateKeyPairSync('x25519');
  const secret = Buffer.from(String(k.export({ format: 'jwk' }).d), 'base64url');
  return { identity: bech32Encode('age-secret-key-', secret).toUpperCase(), recipient: bech32Encode('age', publicOf(secret)) };
}

export function parseRecipient(s: string): Buffer {
  try {
    const { hrp, data } = bech32Decode(s.trim());
    if (hrp !== 'age' || data.length !== 32) throw new Error('not an X25519 recipient');
    return data;
  } catch (err) {
    throw new OffsiteError('E_OFFSITE_KEY', `not an age X25519 recipient (age1…): ${JSON.stringify(s.slice(0, 12))}…: ${(err as Error).message}`, { cause: err });
  }
}

/** Identities from an identity file's text (as age-keygen writes it: comments and one key per line). */
export function parseIdentities(text: string): Buffer[] {
  const keys = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (keys.length === 0) throw new OffsiteError('E_OFFSITE_KEY', 'the identity file holds no AGE-SECRET-KEY-1… line');
  return keys.map((k) => {
    try {
      const { hrp, data } = bech32Decode(k);
      if (hrp !== 'age-secret-key-' || data.length !== 32) throw new Error('not an X25519 identity');
      return data;
    } catch (err) {
      throw new OffsiteError('E_OFFSITE_KEY', `the identity file holds a line that is not an age X25519 identity: ${(err as Error).message}`, { cause: err });
    }
  });
}

const hkdf = (ikm: Buffer, salt: Buffer, info: string, n = 32): Buffer => Buffer.from(hkdfSync('sha256', ikm, salt, info, n));
function aead(key: Buffer, nonce: Buffer, data: Buffer): Buffer {
  const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
  return Buffer.concat([c.update(data), c.final(), c.getAuthTag()]);
}
function open(key: Buffer, nonce: Buffer, data: Buffer): Buffer {
  if (data.length < TAG) throw new Error('short ciphertext');
  const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
  d.setAuthTag(data.subarray(data.length - TAG));
  return Buffer.concat([d.update(data.subarray(0, data.length - TAG)), d.final()]);
}
function wrap64(s: string): string {
  const lines: string[] = [...(s.match(/.{1,64}/g) ?? [])];
  // A body whose last line is full ends with an empty line, so readers know where it stops.
  if (s.length % 64 === 0) lines.push('');
  return `${lines.join('\n')}\n`;
}
const X25519_INFO = 'age-encryption.org/v1/X25519';

function streamNonce(counter: number, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  n.writeUIntBE(counter, 5, 6);
  n[11] = last ? 1 : 0;
  return n;
}

/** Encrypts a byte stream to the recipients; yields the age file. Memory: one 64 KiB chunk. */
export async function* encrypt(recipients: Buffer[], input: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  if (recipients.length === 0) throw new OffsiteError('E_OFFSITE_KEY', 'encryption needs at least one recipient');
  const fileKey = randomBytes(16);
  let header = `${INTRO}\n`;
  for (const r of recipients) {
    const eph = randomBytes(32);
    const share = publicOf(eph);
    const shared = x25519(eph, r);
    const wrapKey = hkdf(shared, Buffer.concat([share, r]), X25519_INFO);
    header += `-> X25519 ${b64(share)}\n${wrap64(b64(aead(wrapKey, Buffer.alloc(12), fileKey)))}`;
  }
  header += '---';
  const mac = createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'header')).update(header).digest();
  yield Buffer.from(`${header} ${b64(mac)}\n`);
  const nonce = randomBytes(16);
  yield nonce;
  const key = hkdf(fileKey, nonce, 'payload');
  let counter = 0;
  let pending: Buffer = Buffer.alloc(0);
  for await (const chunk of input) {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    // Keep at least one byte back: only the final chunk carries the last-chunk flag.
    while (pending.length > CHUNK) {
      yield aead(key, streamNonce(counter++, false), pending.subarray(0, CHUNK));
      pending = pending.subarray(CHUNK);
    }
  }
  yield aead(key, streamNonce(counter, true), pending);
}

/** Decrypts an age file with one of the identities; yields the plaintext. Any tampering is an error. */
export async function* decrypt(identities: Buffer[], input: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const bad = (why: string, cause?: unknown): OffsiteError => new OffsiteError('E_OFFSITE_DECRYPT', `cannot decrypt the off-site copy: ${why}`, { cause });
  const it = input[Symbol.asyncIterator]();
  let buf: Buffer = Buffer.alloc(0);
  const more = async (): Promise<boolean> => {
    const n = await it.next();
    if (n.done) return false;
    buf = Buffer.concat([buf, n.value]);
    return true;
  };
  // Header: text lines up to "--- <mac>\n".
  let end = -1;
  while ((end = buf.indexOf('\n---')) < 0 || buf.indexOf('\n', end + 1) < 0) {
    if (buf.length > 1 << 20 || !(await more())) throw bad('no age header');
  }
  const macLineEnd = buf.indexOf('\n', end + 1);
  const headerText = buf.subarray(0, end + 4).toString('latin1');
  const macText = buf.subarray(end + 5, macLineEnd).toString('latin1');
  buf = buf.subarray(macLineEnd + 1);
  const lines = headerText.split('\n');
  if (lines[0] !== INTRO) throw bad('not an age v1 file');
  let fileKey: Buffer | null = null;
  for (let i = 1; i < lines.length - 1; ) {
    const args = (lines[i] ?? '').split(' ');
    let body = '';
    i++;
    for (;;) {
      const l = lines[i++] ?? '';
      body += l;
      if (l.length < 64) break;
    }
    if (args[0] !== '->' || args[1] !== 'X25519' || fileKey) continue;
    const share = unb64(args[2] ?? '');
    const wrapped = unb64(body);
    for (const id of identities) {
      try {
        const shared = x25519(id, share);
        fileKey = open(hkdf(shared, Buffer.concat([share, publicOf(id)]), X25519_INFO), Buffer.alloc(12), wrapped);
        break;
      } catch {
        // not this identity
      }
    }
  }
  if (!fileKey) throw bad('none of the identities matches a recipient of this file');
  const mac = createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'header')).update(headerText).digest();
  const given = unb64(macText);
  if (given.length !== mac.length || !timingSafeEqual(given, mac)) throw bad('the header was tampered with');
  while (buf.length < 16) if (!(await more())) throw bad('truncated before the payload nonce');
  const key = hkdf(fileKey, buf.subarray(0, 16), 'payload');
  buf = buf.subarray(16);
  let counter = 0;
  for (;;) {
    while (buf.length <= CHUNK + TAG) if (!(await more())) break;
    const last = buf.length <= CHUNK + TAG;
    const take = last ? buf.length : CHUNK + TAG;
    let plain: Buffer;
    try {
      plain = open(key, streamNonce(counter++, last), buf.subarray(0, take));
    } catch (err) {
      throw bad(last ? 'the file is truncated or was tampered with' : 'a chunk was tampered with', err);
    }
    buf = buf.subarray(take);
    if (plain.length > 0 || last) yield plain;
    if (last) return;
  }
}
