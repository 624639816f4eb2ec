// The promises of src/store/postgres/connection.ts on the real server: the pool's connections keep TCP
// keepalive armed (a section holds a connection idle for long; a peer that vanished must be noticed so
// its locks are freed); a lease marked unusable is destroyed on release, never handed back; and the
// error of a failed start keeps its cause with no password left in it (message, stack, parse input).
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Pool } from 'pg';
import { createPool, Lease, openError } from '../../src/store/postgres/connection.js';
import { describePg, PG_URL } from '../helpers/pg.js';

/** The timer field of this socket's line in /proc/net/tcp: 02 is the keepalive timer, 00 none. */
function tcpTimer(localPort: number): string | undefined {
  const hex = `:${localPort.toString(16).toUpperCase().padStart(4, '0')}`;
  const line = readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((f) => f[1]?.endsWith(hex));
  return line?.[5]?.split(':')[0];
}

describePg('PostgreSQL connections', () => {
  let pool: Pool;
  beforeAll(() => {
    pool = createPool(PG_URL);
  });
  afterAll(async () => {
    await pool.end();
  });

  it('a pooled connection has TCP keepalive armed', async () => {
    const client = await pool.connect();
    try {
      const socket = (client as unknown as { connection: { stream: { localPort: number } } }).connection.stream;
      // The test server is on 127.0.0.1 (IPv4): its sockets are in /proc/net/tcp.
      expect(tcpTimer(socket.localPort)).toBe('02');
      const r = await client.query<{ a: string }>('SELECT current_setting($1) AS a', ['application_name']);
      expect(r.rows[0]?.a).toBe('chatmem');
    } finally {
      client.release();
    }
  });

  it('a healthy lease goes back to the pool; a poisoned one is destroyed, its backend gone', async () => {
    const healthy = new Lease(await pool.connect());
    const pid = (await healthy.client.query<{ p: number }>('SELECT pg_backend_pid() AS p')).rows[0]?.p;
    healthy.release();
    expect(pool.totalCount).toBe(1);
    const again = new Lease(await pool.connect());
    expect((await again.client.query<{ p: number }>('SELECT pg_backend_pid() AS p')).rows[0]?.p).toBe(pid);
    // A ROLLBACK that failed leaves the connection in an unknown state: marked, never reused.
    again.poison('rollback failed');
    again.poison(new Error('second'));
    again.release();
    expect(pool.totalCount).toBe(0);
    const fresh = new Lease(await pool.connect());
    try {
      expect((await fresh.client.query<{ p: number }>('SELECT pg_backend_pid() AS p')).rows[0]?.p).not.toBe(pid);
    } finally {
      fresh.release();
    }
  });
});

it('openError: E_STORE_OPEN naming the URL, the cause kept with its password scrubbed from message, stack and parse input', () => {
  const cs = 'postgres://u:s3cr3tPw@db.example/x';
  const err = new Error('connect failed for postgres://u:s3cr3tPw@db.example/x (s3cr3tPw)');
  // A stack already formatted (read once) holds the message as it was then.
  expect(err.stack).toContain('s3cr3tPw');
  Object.assign(err, { input: cs });
  const e = openError(err, 'postgres://u:***@db.example/x', cs);
  expect(e).toMatchObject({ code: 'E_STORE_OPEN', message: 'cannot open PostgreSQL store postgres://u:***@db.example/x: connect failed for postgres://u:***@db.example/x (***)' });
  expect(e.cause).toBe(err);
  expect(err.message).not.toContain('s3cr3tPw');
  expect(err.stack).not.toContain('s3cr3tPw');
  expect(err.stack).toContain('connect failed for');
  expect((err as Error & { input: string }).input).toBe('postgres://u:***@db.example/x');
});

it('openError: an input that is not a string stays; an error without a stack; a thrown non-Error, scrubbed too', () => {
  const withNumber = Object.assign(new Error('bad'), { input: 5 });
  expect(openError(withNumber, 'u', undefined)).toMatchObject({ message: 'cannot open PostgreSQL store u: bad' });
  expect(withNumber.input).toBe(5);
  const noStack = new Error('no stack here');
  noStack.stack = undefined;
  expect(openError(noStack, 'u', 'postgres://a:b@h/d')).toMatchObject({ code: 'E_STORE_OPEN', message: 'cannot open PostgreSQL store u: no stack here' });
  expect(noStack.stack).toBeUndefined();
  const e = openError('refused by postgres://a:pw@h/d', 'u', 'postgres://a:pw@h/d');
  expect(e).toMatchObject({ code: 'E_STORE_OPEN', message: 'cannot open PostgreSQL store u: refused by postgres://a:***@h/d' });
  expect(e.cause).toBe('refused by postgres://a:***@h/d');
});
