/** Packages that ship only ES modules: Node 20 can require() them, Jest's module system cannot, so swc compiles them. */
const ESM_ONLY = ['content-disposition', 'cookie', 'set-cookie-parser', 'toad-cache', 'ms', 'uuid'];

const swc = ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' } }];

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.(ts|js|mjs)$': swc },
  transformIgnorePatterns: [`/node_modules/(?!(${ESM_ONLY.join('|')})/)`],
  globalSetup: '<rootDir>/test/support/globalSetup.ts',
  globalTeardown: '<rootDir>/test/support/globalTeardown.ts',
  // two cores: two files at a time; integration files each bring their own database and worker
  maxWorkers: 2,
  testTimeout: 120000,
  verbose: true,
};
