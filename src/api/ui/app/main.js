// Placeholder until the app shell lands (the ui-app branch replaces this file).
export {};
