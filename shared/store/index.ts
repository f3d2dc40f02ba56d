export * from './store.js';
export * from "./keyed-lock.js";
export * from "./semaphore.js";
