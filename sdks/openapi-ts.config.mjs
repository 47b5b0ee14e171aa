// @hey-api/openapi-ts configuration of the TypeScript SDK (`make sdks`): docs/openapi.json in,
// a fetch-based client in sdks/build/typescript/src out (compiled by sdks/tsconfig.json).
export default {
  input: '../docs/openapi.json',
  output: { path: 'build/typescript/src', importFileExtension: '.js' },
  plugins: [
    '@hey-api/client-fetch',
    '@hey-api/typescript',
    {
      name: '@hey-api/sdk',
      operations: {
        strategy: 'flat',
        // Operation ids are `neotenant.<module>.handlers.<name>`: the functions are named
        // `<module><Name>` (`resourcesCreate`, `usersMe`, `apikeysCreateKey`, ...).
        nesting: (operation) =>
          (operation.operationId ?? operation.id)
            .split('.')
            .filter((part) => part !== 'neotenant' && part !== 'handlers'),
      },
    },
  ],
};
