// The `handoff-agent` CLI has no exports: importing it runs it (see standalone.ts).
export {};
