// TypeScript looks for `index.d.mts` beside an imported `index.mjs`: the types are in index.d.ts.
export * from './index.js';
