export * from './names.js';
export * from './layer.js';
