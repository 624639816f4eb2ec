import { describe, expect, it } from 'vitest';
import { didYouMean, editDistance } from '../src/suggest.js';

describe('did you mean', () => {
  it('counts a transposition as one edit', () => {
    expect(editDistance('memroy.json', 'memory.json')).toBe(1);
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('', 'abc')).toBe(3);
  });

  it('suggests the closest candidate within one edit per three characters, case differences free', () => {
    expect(didYouMean('backupdir', ['backupDir', 'auditLog', 'dataDir'])).toBe('backupDir');
    expect(didYouMean('memroy.json', ['memory.json', 'memory.db', 'backups'])).toBe('memory.json');
    expect(didYouMean('stat', ['stats', 'status', 'start'])).toBe('stats');
    expect(didYouMean('frobnicate', ['stats', 'status', 'start'])).toBeNull();
    // Short words need a close match: "ab" is not a typo of "users".
    expect(didYouMean('ab', ['users'])).toBeNull();
    expect(didYouMean('users', ['users', 'user'])).toBeNull();
  });
});
