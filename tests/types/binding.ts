// Compiled by `npm test` (tsc --noEmit) with the JS files that call the raw binding: each has
// `// @ts-check`, so js/binding.d.ts is checked against how js/ uses it, and the JS files that import
// them are type-checked as far as their JSDoc goes.
import '../../js/binding.js';
import '../../js/model.js';
import '../../js/index.js';
