import { describe, expect, it } from 'vitest';
import { derivedName } from '../../src/store/postgres/config.js';
import { isSideTable, sideTableName } from '../../src/store/postgres/swap.js';

/**
 * The names of the tables a PostgreSQL swap makes beside the users table (src/store/postgres/swap.ts):
 * only these are ever dropped by another daemon's clean-up, so the test of a name must take every one
 * the store makes and nothing else (another store's table, an operator's table, a name one character off).
 */
describe('PostgreSQL side-table names', () => {
  const long = `t${'x'.repeat(50)}`;

  it('takes every stage and set-aside name the store makes, short and hashed', () => {
    for (const table of ['chatmem_users', 'users', "it's \"odd\"", long]) {
      for (const kind of ['stage', 'old'] as const) {
        const name = sideTableName(table, kind);
        expect(isSideTable(table, name), `${table} ${kind}`).toBe(true);
        expect(Buffer.byteLength(name)).toBeLessThanOrEqual(63);
        expect(sideTableName(table, kind)).not.toBe(name);
      }
    }
    expect(sideTableName('chatmem_users', 'stage')).toMatch(/^chatmem_users_stage_[0-9a-f]{12}$/);
    expect(sideTableName('chatmem_users', 'old')).toMatch(/^chatmem_users_old_[0-9a-f]{12}$/);
    // Past 63 bytes the name is hashed from the table's, the random part kept.
    expect(sideTableName(long, 'stage')).toMatch(new RegExp(`^chatmem_stage_[0-9a-f]{12}_${derivedName(long, 'stage_000000000000').split('_').pop() ?? 'none'}$`));
  });

  it('refuses everything else: the live table, other kinds, other stores, a digit off, a character more or less, upper case', () => {
    const t = 'chatmem_users';
    for (const name of [
      t,
      `${t}_deleted`,
      `${t}_stage_`,
      `${t}_stage_0123456789a`,
      `${t}_stage_0123456789abc`,
      `${t}_stage_0123456789aG`,
      `${t}_stage_0123456789AB`,
      `${t}_stage_0123456789ab_x`,
      `x${t}_stage_0123456789ab`,
      `${t}_new_0123456789ab`,
      `other_stage_0123456789ab`,
      `${t}_old_01234567-9ab`,
      `${t}_stage_0123456789ab`.replace('_stage_', '_stagex'),
    ]) {
      expect(isSideTable(t, name), name).toBe(false);
    }
    expect(isSideTable(t, `${t}_stage_0123456789ab`)).toBe(true);
    expect(isSideTable(t, `${t}_old_0123456789ab`)).toBe(true);
    // Another store's table in the same schema whose name starts like this one's.
    expect(isSideTable('users', 'chatmem_users_stage_0123456789ab')).toBe(false);
    // Hashed: the suffix (the table's hash) must match too.
    const hashed = sideTableName(long, 'old');
    expect(isSideTable(`${long}y`, hashed)).toBe(false);
    expect(isSideTable(long, `${hashed.slice(0, -1)}${hashed.endsWith('1') ? '2' : '1'}`)).toBe(false);
  });
});
