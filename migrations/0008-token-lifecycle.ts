// Tokens may expire; the sweeper disconnects sockets of tokens that just expired or were
// revoked (by the CLI, from another process): indexes keep that proportional to them.
export const name = '0008-token-lifecycle';

export const up: string[] = [
  `alter table api_tokens add column expires_at timestamptz null`,
  `create index api_tokens_expiry_idx on api_tokens (expires_at) where expires_at is not null and revoked_at is null`,
  `create index api_tokens_user_idx on api_tokens (user_id)`,
  `create index api_tokens_revoked_idx on api_tokens (revoked_at) where revoked_at is not null`,
];
