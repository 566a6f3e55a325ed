// ESLint: recommended rules for the plugin's TypeScript and the tests' JavaScript.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
    { ignores: ['dist/', 'node_modules/'] },
    js.configs.recommended,
    ...tseslint.configs.recommended,
    {
        rules: {
            '@typescript-eslint/no-unused-vars': ['error', { varsIgnorePattern: '^_', argsIgnorePattern: '^_' }],
        },
    },
    {
        files: ['tests/**/*.mjs', 'build.mjs'],
        languageOptions: {
            globals: {
                console: 'readonly', process: 'readonly', fetch: 'readonly', setTimeout: 'readonly',
                window: 'readonly', document: 'readonly', URL: 'readonly', Buffer: 'readonly',
                CustomEvent: 'readonly', Image: 'readonly', structuredClone: 'readonly', URLSearchParams: 'readonly', Date: 'readonly',
            },
        },
    },
);
