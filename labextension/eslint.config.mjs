// ESLint 9 flat config: typescript-eslint's recommended rules over the sources and tests.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  // src/api-types.ts is generated (make api-types): linted by nobody, diffed by CI.
  { ignores: ['lib/', 'prebuilt/', 'node_modules/', 'src/api-types.ts'] },
  ...tseslint.configs.recommended,
  {
    files: ['src/**/*.{ts,tsx}', 'test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-namespace': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { args: 'none' }],
      eqeqeq: 'error',
      curly: 'error',
      'prefer-const': 'error'
    }
  }
);
