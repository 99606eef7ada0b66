'use strict';
// native/core/vocabulary.json as js/ and scripts/ read it, with the renderings they share.

const vocabulary = require('../native/core/vocabulary.json');

/** A stat's meaning with its window's size written in ("over the last {latencyAnswers} answers"). */
function statMeaning(stat, source = vocabulary) {
  return stat.meaning.replace(/\{(\w+)\}/g, (_, name) => source.statsWindows.find((w) => w.name === name).value);
}

/**
 * The server's variables, each whole: one that sets a load option (`option`) takes that option's type,
 * range and default unless it states its own.
 */
function serverVariables(source = vocabulary) {
  return source.server.map((entry) => {
    if (!entry.option) return entry;
    const { type, default: fallback, min, max } = source.options.find((o) => o.name === entry.option);
    return { type, default: fallback, min, max, meaning: `${entry.option} of each model`, ...entry };
  });
}

/** What a variable comes to when it is not set: its `unset` words, or its default. */
function unsetValue(variable) {
  return variable.unset ?? String(variable.default);
}

module.exports = { vocabulary, statMeaning, serverVariables, unsetValue };
