// @peculiar/x509 uses tsyringe, which refuses to load unless a Reflect metadata polyfill
// (reflect-metadata, core-js/es7/reflect, @abraham/reflection) is installed. None is a
// dependency of ra-mesh, so this module installs the minimal subset tsyringe uses
// (defineMetadata, getMetadata, getOwnMetadata, hasMetadata, hasOwnMetadata, metadata) when no
// polyfill is present. It must be evaluated before @peculiar/x509: import @peculiar/x509 only
// through ./x509.js, which imports this module first.

type Key = string | symbol | undefined;
type MetadataMap = Map<unknown, unknown>;

interface ReflectMetadata {
  defineMetadata(metadataKey: unknown, metadataValue: unknown, target: object, propertyKey?: string | symbol): void;
  getMetadata(metadataKey: unknown, target: object, propertyKey?: string | symbol): unknown;
  getOwnMetadata(metadataKey: unknown, target: object, propertyKey?: string | symbol): unknown;
  hasMetadata(metadataKey: unknown, target: object, propertyKey?: string | symbol): boolean;
  hasOwnMetadata(metadataKey: unknown, target: object, propertyKey?: string | symbol): boolean;
  metadata(metadataKey: unknown, metadataValue: unknown): (target: object, propertyKey?: string | symbol) => void;
}

const R = Reflect as typeof Reflect & Partial<ReflectMetadata>;

if (typeof R.getMetadata !== 'function') {
  const store = new WeakMap<object, Map<Key, MetadataMap>>();
  const own = (target: object, propertyKey: Key, create: boolean): MetadataMap | undefined => {
    let byProp = store.get(target);
    if (!byProp) {
      if (!create) return undefined;
      byProp = new Map();
      store.set(target, byProp);
    }
    let map = byProp.get(propertyKey);
    if (!map && create) {
      map = new Map();
      byProp.set(propertyKey, map);
    }
    return map;
  };
  const find = (key: unknown, target: object, propertyKey: Key): MetadataMap | undefined => {
    for (let t: object | null = target; t !== null; t = Object.getPrototypeOf(t) as object | null) {
      const map = own(t, propertyKey, false);
      if (map?.has(key)) return map;
    }
    return undefined;
  };
  const impl: ReflectMetadata = {
    defineMetadata(key, value, target, propertyKey) {
      own(target, propertyKey, true)!.set(key, value);
    },
    getMetadata(key, target, propertyKey) {
      return find(key, target, propertyKey)?.get(key);
    },
    getOwnMetadata(key, target, propertyKey) {
      return own(target, propertyKey, false)?.get(key);
    },
    hasMetadata(key, target, propertyKey) {
      return find(key, target, propertyKey) !== undefined;
    },
    hasOwnMetadata(key, target, propertyKey) {
      return own(target, propertyKey, false)?.has(key) ?? false;
    },
    metadata(key, value) {
      return (target, propertyKey) => impl.defineMetadata(key, value, target, propertyKey);
    },
  };
  for (const [name, fn] of Object.entries(impl)) {
    Object.defineProperty(Reflect, name, { value: fn, writable: true, configurable: true, enumerable: false });
  }
}

export {};
