export * from './problems.js';
export * from './ra-error.js';
