import pg from 'pg';
import { afterEach, expect, it, vi } from 'vitest';
import { newRecord } from '../../src/record.js';
import { PostgresDriver } from '../../src/store/postgres/index.js';
import { DELETED_KEEP_HOURS } from '../../src/store/postgres/sql.js';
import { PG_URL, createSchema, describePg } from '../helpers/pg.js';

/**
 * The change feed's limits (src/store/postgres/changes.ts), with the changes made by a second real
 * connection: once a feed has overflowed it stays so, a feed older than the deleted-users log keeps
 * gives up, and more than 500,000 changed users is an overflow while 500,000 is not.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function setup(): Promise<{ driver: PostgresDriver; other: pg.Client; schema: string }> {
  const { schema, drop } = await createSchema();
  const other = new pg.Client({ connectionString: PG_URL });
  await other.connect();
  cleanups.push(drop, () => other.end());
  const driver = await PostgresDriver.connect({ connectionString: PG_URL, schema });
  cleanups.push(() => driver.close());
  return { driver, other, schema };
}

const HOUR = 3_600_000;

describePg('PostgreSQL change feed limits', () => {
  it('a feed that overflowed stays overflowed: users written after it are not listed as if it were whole', async () => {
    const { driver, other, schema } = await setup();
    const feed = driver.trackChanges();
    await feed.refresh?.();
    await driver.exclusive('all', (ctx) => ctx.clear());
    await feed.refresh?.();
    expect([feed.overflow, feed.ids.size]).toEqual([true, 0]);
    await other.query(`INSERT INTO "${schema}".chatmem_users_deleted (user_id) VALUES ('later')`);
    await driver.update('written', () => newRecord('written'));
    await feed.refresh?.();
    expect([feed.overflow, [...feed.ids]]).toEqual([true, []]);
  });

  it('gives up once its mark is older than the deleted-users log keeps (less an hour), not before', async () => {
    const { driver, other, schema } = await setup();
    // Only Date is replaced: the feed's age is read from the clock, and no timer is faked.
    vi.useFakeTimers({ toFake: ['Date'], now: new Date('2026-11-30T00:00:00.000Z') });
    const feed = driver.trackChanges();
    await feed.refresh?.();
    await other.query(`INSERT INTO "${schema}".chatmem_users_deleted (user_id) VALUES ('gone')`);
    const limit = (DELETED_KEEP_HOURS - 1) * HOUR;
    vi.setSystemTime(Date.parse('2026-11-30T00:00:00.000Z') + limit);
    await feed.refresh?.();
    expect([feed.overflow, [...feed.ids]]).toEqual([false, ['gone']]);
    vi.setSystemTime(Date.parse('2026-11-30T00:00:00.000Z') + limit + 1);
    await feed.refresh?.();
    expect([feed.overflow, feed.ids.size]).toEqual([true, 0]);
  });

  it('500,000 changed users are listed; one more is an overflow', async () => {
    const { driver, other, schema } = await setup();
    const feed = driver.trackChanges();
    await feed.refresh?.();
    // Deletes logged by another connection: the cheapest rows the feed reads.
    await other.query(`INSERT INTO "${schema}".chatmem_users_deleted (user_id) SELECT 'u' || g FROM generate_series(1, 500000) AS g`);
    await feed.refresh?.();
    expect([feed.overflow, feed.ids.size]).toEqual([false, 500_000]);
    expect(feed.ids.has('u1') && feed.ids.has('u500000')).toBe(true);
    await other.query(`INSERT INTO "${schema}".chatmem_users_deleted (user_id) VALUES ('u500001')`);
    await feed.refresh?.();
    expect([feed.overflow, feed.ids.size]).toEqual([true, 0]);
  });
});
