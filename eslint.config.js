import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'data/**', 'coverage/**', 'reports/**', '.stryker-tmp*/**'] },
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
    // Tokens are compared in constant time only (sameToken: digests + timingSafeEqual); a plain
    // comparison leaks how much of a guessed token matched. test/mutation/token-compare.test.ts checks this rule.
    files: ['src/server/**/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector:
            "BinaryExpression[operator=/^[=!]==?$/]:not([left.type='Literal']):not([right.type='Literal']):not([left.type='Identifier'][left.name='undefined']):not([right.type='Identifier'][right.name='undefined']) > :matches(Identifier[name=/token|secret|digest/i], MemberExpression[property.name=/token|secret|digest/i])",
          message: 'Compare tokens with sameToken() (constant time), not ===/!==.',
        },
        {
          selector: "CallExpression[callee.property.name=/^(equals|compare|localeCompare)$/] :matches(Identifier[name=/token|secret|digest/i], MemberExpression[property.name=/token|secret|digest/i])",
          message: 'Compare tokens with sameToken() (constant time), not Buffer/String comparisons.',
        },
        {
          selector: "FunctionDeclaration[id.name='sameToken']:not(:has(CallExpression[callee.name='timingSafeEqual']))",
          message: 'sameToken must compare with crypto.timingSafeEqual.',
        },
        {
          selector: "FunctionDeclaration[id.name='sameToken'] :matches(BinaryExpression[operator=/^[=!]==?$/], CallExpression[callee.property.name=/^(equals|compare|localeCompare)$/])",
          message: 'sameToken must not short-circuit on a plain comparison.',
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
);
