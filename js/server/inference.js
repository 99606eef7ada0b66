'use strict';
// The Open Inference Protocol v2's semantics, whichever transport carries them (js/server/oip.js over
// HTTP, js/server/grpc.js over gRPC): the model's metadata, the server's, which model a request names,
// a request checked whole, its inputs (encoded images or preprocessed Float32Arrays) and the outputs
// asked for, with the classification extension. A transport turns its request into the shape the HTTP
// JSON has (`{ id, parameters, inputs: [{ name, datatype, shape, data | binary }], outputs }`) and the
// outputs into its own answer.

const { ChoripanError } = require('../errors');
const { version } = require('../../package.json');
const { topIndices } = require('..');

const IMAGE_INPUT = 'image';
const TENSOR_INPUT = 'input';
const OUTPUT = 'probabilities';

const bad = (message) => new ChoripanError('E_INVALID_ARGUMENT', message);

/** A model's metadata, as the version `served` has it, with every version served. */
function metadataOf(served, versions) {
  const { name, model } = served;
  const crop = model.metadata.preprocessing.crop;
  return {
    name,
    versions: versions.map(String),
    platform: 'choripan',
    inputs: [
      { name: IMAGE_INPUT, datatype: 'BYTES', shape: [-1] },
      { name: TENSOR_INPUT, datatype: 'FP32', shape: [-1, 3, crop, crop] },
    ],
    outputs: [{ name: OUTPUT, datatype: 'FP32', shape: [-1, model.labels.length] }],
  };
}

const elementCount = (shape) => shape.reduce((n, d) => n * d, 1);

/** BYTES elements from the binary extension: each a little-endian uint32 length, then the bytes. */
function splitBytes(buffer) {
  const elements = [];
  for (let at = 0; at < buffer.length;) {
    if (at + 4 > buffer.length) throw bad('the BYTES tensor data is truncated');
    const length = buffer.readUInt32LE(at);
    if (at + 4 + length > buffer.length) throw bad('a BYTES element is longer than the data that holds it');
    elements.push(buffer.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  return elements;
}

function joinBytes(strings) {
  return Buffer.concat(strings.flatMap((s) => {
    const bytes = Buffer.from(s);
    const length = Buffer.alloc(4);
    length.writeUInt32LE(bytes.length);
    return [length, bytes];
  }));
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);

/** Text the client chose, for a message: quoted and cut short. */
const quoted = (text) => JSON.stringify(text.length > 64 ? `${text.slice(0, 64)}…` : text);

function optionalObject(value, what) {
  if (value !== undefined && !isObject(value)) throw bad(`${what} must be an object`);
  return value ?? {};
}

function optionalBoolean(value, what) {
  if (value !== undefined && typeof value !== 'boolean') throw bad(`${what} must be true or false`);
}

/**
 * Every field of the request that this server reads, typed as the protocol types it, checked before
 * anything is decoded or run: a request that breaks one is refused whole, not halfway through or after
 * its inference. No value is walked deeper than the protocol nests it, and none is echoed unchecked.
 */
function checkRequest(request) {
  if (!isObject(request)) throw bad('the inference request must be a JSON object');
  if (request.id !== undefined && typeof request.id !== 'string') throw bad('"id" must be a string');
  optionalBoolean(optionalObject(request.parameters, '"parameters"').binary_data_output, 'parameters.binary_data_output');
  if (!Array.isArray(request.inputs) || request.inputs.length !== 1) {
    throw bad('the inference request needs "inputs" with exactly one tensor');
  }
  const [input] = request.inputs;
  if (!isObject(input) || typeof input.name !== 'string' || typeof input.datatype !== 'string') {
    throw bad('the input needs a string "name" and "datatype"');
  }
  const name = `input ${quoted(input.name)}`;
  if (!Array.isArray(input.shape) || input.shape.length > 4 || !input.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw bad(`${name}: "shape" must be a list of at most 4 non-negative integers`);
  }
  const binarySize = optionalObject(input.parameters, `${name}: "parameters"`).binary_data_size;
  if (binarySize !== undefined && !(Number.isSafeInteger(binarySize) && binarySize >= 0)) {
    throw bad(`${name}: binary_data_size must be a non-negative integer`);
  }
  if (binarySize === undefined && !Array.isArray(input.data)) throw bad(`${name} has neither "data" nor binary data`);
  if (request.outputs === undefined) return;
  if (!Array.isArray(request.outputs)) throw bad('"outputs" must be a list');
  for (const output of request.outputs) {
    if (!isObject(output) || output.name !== OUTPUT) {
      const named = typeof output?.name === 'string' ? quoted(output.name) : 'without a name';
      throw bad(`"outputs" asks for an output ${named}; the output is ${OUTPUT}`);
    }
    const { classification, binary_data: binary } = optionalObject(output.parameters, `output ${OUTPUT}: "parameters"`);
    if (classification !== undefined && !(Number.isSafeInteger(classification) && classification >= 1)) {
      throw bad('classification needs a positive integer');
    }
    optionalBoolean(binary, 'binary_data');
  }
}

/**
 * The model inputs a request holds: encoded images or preprocessed Float32Arrays. JSON data may nest as
 * deep as its shape, no deeper: flattened that far, whatever is still a list is refused as an element.
 */
function inputsOf({ input, binary }, model) {
  const crop = model.metadata.preprocessing.crop;
  const name = `input ${quoted(input.name)}`;
  const data = binary ? null : input.data.flat(input.shape.length - 1);
  if (input.datatype === 'BYTES') {
    const n = input.shape[0];
    if (!(input.shape.length === 1 || (input.shape.length === 2 && input.shape[1] === 1)) || !(n >= 1)) {
      throw bad(`${name}: BYTES images take the shape [N] or [N, 1], got [${input.shape}]`);
    }
    // JSON's elements are base64 strings; gRPC's bytes_contents are the bytes themselves.
    const images = binary ? splitBytes(binary) : data.map((text, i) => {
      if (Buffer.isBuffer(text)) return text;
      if (typeof text !== 'string' || !BASE64.test(text) || text.length % 4 !== 0) {
        throw bad(`${name}: element ${i} is not a base64 string`);
      }
      return Buffer.from(text, 'base64');
    });
    if (images.length !== n) throw bad(`${name}: the shape says ${n} images, the data holds ${images.length}`);
    return images;
  }
  if (input.datatype === 'FP32') {
    const [n, channels, height, width] = input.shape;
    if (input.shape.length !== 4 || channels !== 3 || height !== crop || width !== crop || !(n >= 1)) {
      throw bad(`${name}: FP32 input takes the shape [N, 3, ${crop}, ${crop}], got [${input.shape}]`);
    }
    let values;
    if (binary) {
      if (binary.length !== elementCount(input.shape) * 4) throw bad(`${name}: binary data is not [${input.shape}] float32`);
      values = new Float32Array(binary.buffer.slice(binary.byteOffset, binary.byteOffset + binary.length));
    } else {
      if (data.length !== elementCount(input.shape) || !data.every((v) => typeof v === 'number')) {
        throw bad(`${name}: data must hold the shape's ${elementCount(input.shape)} numbers, nested no deeper than it`);
      }
      values = Float32Array.from(data);
    }
    const plane = 3 * crop * crop;
    return Array.from({ length: n }, (_, i) => values.slice(i * plane, (i + 1) * plane));
  }
  throw bad(`${name}: datatype ${quoted(input.datatype)} is not taken; send BYTES (encoded images) or FP32 (preprocessed)`);
}

/** The outputs asked for (all of them, by default), each with its data and whether it goes binary. */
function outputsOf(request, rows, model) {
  const wanted = request.outputs ?? [{ name: OUTPUT, parameters: {} }];
  const binaryDefault = request.parameters?.binary_data_output === true;
  return wanted.map((asked) => {
    const binary = asked.parameters?.binary_data ?? binaryDefault;
    const k = asked.parameters?.classification;
    if (k !== undefined) {
      const count = Math.min(k, model.labels.length);
      const strings = rows.flatMap((p) => topIndices(p, count).map(([i, probability]) => `${probability}:${i}:${model.labels[i]}`));
      return { name: OUTPUT, datatype: 'BYTES', shape: [rows.length, count], strings, binary };
    }
    const values = new Float32Array(rows.length * model.labels.length);
    rows.forEach((p, i) => values.set(p, i * model.labels.length));
    return { name: OUTPUT, datatype: 'FP32', shape: [rows.length, model.labels.length], values, binary };
  });
}

/** What the server says of itself (GET /v2, ServerMetadata). */
const serverMetadata = () => ({ name: 'choripan', version, extensions: ['classification', 'binary_tensor_data'] });

/** A version as a request writes it: a positive integer, in one spelling ('01' is no version); else undefined. */
const versionNumber = (text) => (/^[1-9]\d{0,15}$/.test(text ?? '') ? Number(text) : undefined);

/**
 * The version of a model that a request names (the catalog's, js/server/catalog.js), or E_NOT_FOUND:
 * `modelVersion`, or without one (HTTP's /v2/models/NAME, gRPC's empty model_version) the highest served.
 * @param {import('./catalog').Catalog} catalog
 * @param {string} name
 * @param {string | undefined} [modelVersion]
 * @returns {import('./catalog').Served}
 */
function findServed(catalog, name, modelVersion) {
  const versions = catalog.versions(name);
  if (!versions.length) throw new ChoripanError('E_NOT_FOUND', `no model named ${quoted(String(name))}; there are ${catalog.names().join(', ') || 'none'}`);
  const latest = modelVersion === undefined || modelVersion === '';
  const found = latest ? catalog.find(name) : versionNumber(modelVersion) !== undefined && catalog.find(name, versionNumber(modelVersion));
  if (!found) throw new ChoripanError('E_NOT_FOUND', `model ${name} has no version ${quoted(String(modelVersion))}; it has ${versions.join(', ')}`);
  return found;
}

module.exports = {
  IMAGE_INPUT, TENSOR_INPUT, OUTPUT, bad, quoted, metadataOf, serverMetadata, versionNumber, findServed, splitBytes, joinBytes, checkRequest, inputsOf, outputsOf,
};
