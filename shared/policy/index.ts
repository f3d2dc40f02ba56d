export * from './names.js';
export * from './layer.js';
export * from './renewal.js';
