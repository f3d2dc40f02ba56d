// The one entry point to @peculiar/x509 in ra-mesh: it installs the Reflect metadata polyfill the
// library needs (see ./reflect-metadata.ts) before the library is evaluated. Import X.509 classes
// from here, never from '@peculiar/x509' directly, unless the process already loaded a polyfill.
import './reflect-metadata.js';

export * from '@peculiar/x509';
