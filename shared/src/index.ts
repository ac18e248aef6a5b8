export * from './errors.js';
export * from './duration.js';
export * from './domain.js';
export * from './config.js';
export * from './rest.js';
export * from './events.js';
export * from './redaction.js';
export * from './text-safety.js';
