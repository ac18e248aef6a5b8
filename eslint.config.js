// One lint config for the monorepo. Besides code hygiene it enforces the dependency
// direction of CONVENTIONS.md: shared → zod only; web/worker never import server;
// server/src/domain imports nothing with side effects (no I/O, ORM, sockets, logs).
import tseslint from 'typescript-eslint';

const serverImports = { group: ['**/server/**', '@handoff/server', '@handoff/server/**'], message: 'web/ and worker/ never import the server.' };


// Inside the hub: edges (http/, socket/, and each feature's *-routes.ts) → feature folders →
// domain/, infra/, hooks/. A feature's modules import another feature only where FEATURE_DEPS
// declares it (the table is acyclic: audit → policy → runs → sessions → grants → control…);
// any other reaction goes through hooks/ (the typed HubEvents bus, the Notifier), wired in hub.ts.
const FEATURE_DEPS = {
  audit: [],
  policy: ['audit'],
  auth: ['audit'],
  runs: ['audit', 'policy'],
  sessions: ['audit', 'policy', 'runs'],
  grants: ['audit', 'policy', 'runs', 'sessions'],
  control: ['audit', 'policy', 'runs', 'grants'],
  presence: ['audit', 'policy', 'runs', 'grants'],
  approvals: ['audit', 'policy'],
  messages: ['audit', 'policy', 'runs'],
  terminal: [],
  workers: ['audit', 'runs'],
  webhooks: [],
  sweeper: ['audit', 'runs', 'sessions'],
};
const FEATURES = Object.keys(FEATURE_DEPS);
const featureRules = FEATURES.map((feature) => ({
  files: [`server/src/${feature}/**/*.ts`],
  ignores: ['server/src/*/**/*-routes.ts', 'server/src/**/*.test.ts'],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          ...FEATURES.filter((f) => f !== feature && !FEATURE_DEPS[feature].includes(f)).map((f) => ({
            group: [`../${f}/*`],
            message: `${feature}/ may use ${FEATURE_DEPS[feature].join(', ') || 'no other feature'} (FEATURE_DEPS in eslint.config.js); react to ${f}/ through hooks/.`,
          })),
          { group: ['../http/*', '../socket/*', '**/*-routes.js'], message: 'features never import the edges (http/, socket/, routes).' },
          { group: ['../hub.js', '../cli.js', '../main.js'], message: 'only the composition root wires features together.' },
        ],
      },
    ],
  },
}));
const foundationRules = {
  files: ['server/src/infra/**/*.ts', 'server/src/hooks/**/*.ts', 'server/src/views.ts'],
  ignores: ['server/src/**/*.test.ts'],
  rules: {
    'no-restricted-imports': [
      'error',
      { patterns: [{ group: FEATURES.flatMap((f) => [`../${f}/*`, `../../${f}/*`, `./${f}/*`]).concat(['**/http/*', '**/socket/*']), message: 'infra/, hooks/ and views know no feature and no edge.' }] },
    ],
  },
};

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
  ...featureRules,
  foundationRules,
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
