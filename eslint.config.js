// One lint config for the monorepo. Besides code hygiene it enforces the dependency
// direction of CONVENTIONS.md: shared → zod only; web/worker never import server;
// server/src/domain imports nothing with side effects (no I/O, ORM, sockets, logs).
import tseslint from 'typescript-eslint';

const serverImports = { group: ['**/server/**', '@handoff/server', '@handoff/server/**'], message: 'web/ and worker/ never import the server.' };

export default tseslint.config(
  { ignores: ['**/node_modules/**', '**/dist/**', 'web/dist/**', '.data/**', '**/*.svelte'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      'no-console': 'error',
    },
  },
  {
    files: ['shared/src/**/*.ts'],
    ignores: ['shared/src/**/*.test.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ regex: '^(?!zod$)(?!\\.{1,2}/).*', message: 'shared/ depends on zod only.' }] }],
    },
  },
  {
    files: ['web/src/**/*.ts', 'worker/src/**/*.ts', 'worker/src/**/*.mjs'],
    rules: { 'no-restricted-imports': ['error', { patterns: [serverImports] }] },
  },
  {
    files: ['server/src/domain/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(?!@handoff/shared$|zod$|node:crypto$|vitest$)(?!\\./).*',
              message: 'domain/ is pure: only @handoff/shared, zod, node:crypto and other domain modules.',
            },
          ],
        },
      ],
    },
  },
  {
    // The browser console is the dashboard's log; it reports, it does not chatter.
    files: ['web/src/**/*.ts'],
    rules: { 'no-console': ['error', { allow: ['error', 'warn'] }] },
  },
  {
    files: ['scripts/**', 'test/**', '**/*.test.ts', 'worker/src/demo-agent.mjs', 'worker/src/demo-mcp-agent.mjs', 'server/src/cli.ts', 'server/src/main.ts'],
    rules: { 'no-console': 'off' },
  },
);
