import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'data/**', 'coverage/**', 'src/web/page.generated.ts', 'reports/**', '.stryker-tmp*/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    // Secrets are compared in constant time (src/server/tokens.ts): an early-exit === on a token leaks
    // through timing how much of a guess was right. Checks against null and undefined stay allowed.
    files: ['src/**/*.ts'],
    // The page runs in the operator's browser: its token checks guard stale answers, not a secret.
    ignores: ['src/web/**'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector:
            "BinaryExpression[operator=/^[!=]=/]:matches([left.name=/token$/i], [left.property.name=/token$/i], [right.name=/token$/i], [right.property.name=/token$/i])" +
            ":not([left.raw='null']):not([right.raw='null']):not([left.type='Identifier'][left.name='undefined']):not([right.type='Identifier'][right.name='undefined'])",
          message: 'Compare tokens with tokenMatches() (src/server/tokens.ts): constant time over digests, never === or !==.',
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: {
      globals: { process: 'readonly', console: 'readonly', performance: 'readonly', setTimeout: 'readonly', setImmediate: 'readonly', Buffer: 'readonly', URL: 'readonly' },
    },
  },
  {
    files: ['scripts/screenshots.mjs'],
    languageOptions: {
      // page.evaluate() callbacks run in the browser.
      globals: { document: 'readonly', window: 'readonly' },
    },
  },
);
