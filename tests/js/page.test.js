'use strict';
// The page at `/`, in Debian's Chromium through playwright-core, against a real server on a loopback
// port and real photos: choosing, dropping and pasting, the busy state, the keyboard and what a screen
// reader is given, the favicon, the page mounted in another Express app, and an API key typed in. Each test saves screenshots
// into one folder under the system's temporary folder, printed at the start, to look at.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { test, describe, before, after } = require('node:test');
const express = require('express');
const pino = require('pino');
const sharp = require('sharp');
const choripan = require('choripan');
const { createApp } = require('choripan/server');
const { photo, photoPath, defaultPackagePath, CAT_LABELS, chromiumPath, launchChromium } = require('./helpers');

/* global document, getComputedStyle, Image, DataTransfer, ClipboardEvent, DragEvent -- in the page */

const skip = !chromiumPath && 'Chromium is not installed here (apt-get install chromium; .ci/run installs it)';
if (skip) console.log(`# the page tests are skipped: ${skip}`);

function listen(handler) {
  return new Promise((resolve) => {
    const server = http.createServer(handler).listen(0, '127.0.0.1', () => resolve({ server, base: `http://127.0.0.1:${server.address().port}` }));
  });
}

/**
 * What Chromium hands a screen reader for the first element the selector finds: role, name, properties,
 * and `live`, the politeness of the live region it is in (Chromium lists it on the region's root only).
 */
async function accessible(page, selector) {
  const cdp = await page.context().newCDPSession(page);
  try {
    const { root } = await cdp.send('DOM.getDocument', { depth: 0 });
    const { nodeId } = await cdp.send('DOM.querySelector', { nodeId: root.nodeId, selector });
    const { nodes } = await cdp.send('Accessibility.getPartialAXTree', { nodeId, fetchRelatives: true });
    const byId = new Map(nodes.map((node) => [node.nodeId, node]));
    const properties = (node) => Object.fromEntries((node.properties ?? []).map(({ name, value }) => [name, value.value]));
    const { node: { backendNodeId } } = await cdp.send('DOM.describeNode', { nodeId });
    const node = nodes.find((candidate) => candidate.backendDOMNodeId === backendNodeId);
    let live;
    for (let at = node; at && live === undefined; at = byId.get(at.parentId)) live = properties(at).live;
    return { role: node.role?.value, name: node.name?.value, ignored: node.ignored, properties: properties(node), live };
  } finally {
    await cdp.detach();
  }
}

/** Fires drag events at an element, as a drag from the desktop does, carrying the files; whether each was cancelled. */
function drag(page, selector, files) {
  return page.evaluate(([target, given]) => {
    const data = new DataTransfer();
    for (const { name, type, bytes } of given) data.items.add(new File([new Uint8Array(bytes)], name, { type }));
    if (!given.length) data.setData('text/uri-list', 'https://example.com/cat.jpg');
    const element = document.querySelector(target);
    const fire = (type) => {
      const event = new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: data });
      element.dispatchEvent(event);
      return event.defaultPrevented;
    };
    return { enter: fire('dragenter'), over: fire('dragover'), dragging: document.body.classList.contains('dragging'), drop: fire('drop') };
  }, [selector, files.map(({ name, type, bytes }) => ({ name, type, bytes: [...bytes] }))]);
}

describe('the page, in Chromium', { skip }, () => {
  let model;
  let browser;
  let server;
  let base;
  let shots;
  // POST requests wait here while `holding`, until a test lets them through: a model as slow as it likes.
  let holding = false;
  const held = [];

  before(async () => {
    shots = fs.mkdtempSync(path.join(os.tmpdir(), 'choripan-page-'));
    console.log(`# the page's screenshots: ${shots}`);
    model = await choripan.load(defaultPackagePath, { workers: 1 });
    const app = createApp({ model, logger: pino({ level: 'silent' }) });
    ({ server, base } = await listen((req, res) => {
      if (holding && req.method === 'POST') held.push({ req, res, release: () => app(req, res) });
      else app(req, res);
    }));
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    server?.close();
    await model?.dispose();
  });

  async function open(url = base) {
    const page = await browser.newPage({ viewport: { width: 900, height: 640 } });
    const failed = [];
    page.on('response', (response) => {
      if (response.status() >= 400) failed.push(`${response.status()} ${response.url()}`);
    });
    page.on('requestfailed', (request) => failed.push(`${request.failure()?.errorText} ${request.url()}`));
    await page.goto(url);
    return { page, failed };
  }

  const shoot = (page, name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

  test('choose a real photo and read its label; paste works; a bad file says so in words, with its code', async () => {
    const { page } = await open();
    await shoot(page, 'empty');
    await page.setInputFiles('#file', photoPath('chelsea.png'));
    await page.waitForSelector('#label:not(:empty)');
    assert.ok(CAT_LABELS.includes(await page.textContent('#label')));
    assert.equal(await page.locator('#top li').count(), 5);
    assert.match(await page.textContent('#top li'), /%/);
    assert.match(await page.textContent('#meta'), /^chelsea\.png · efficientnet-lite0 · \d+ ms$/);
    await shoot(page, 'result');

    await page.evaluate(async (bytes) => {
      const file = new File([new Uint8Array(bytes)], 'coffee.png', { type: 'image/png' });
      const data = new DataTransfer();
      data.items.add(file);
      document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: data }));
    }, [...photo('coffee.png')]);
    await page.waitForFunction(() => document.getElementById('label').textContent === 'espresso');

    await page.setInputFiles('#file', { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('not an image') });
    await page.waitForSelector('#error:not([hidden])');
    assert.equal(await page.textContent('#error-text'), "That file isn't an image we can read (E_DECODE)");
    assert.match(await page.textContent('#error-detail'), /^The bytes are not an image of a known format \(JPEG, PNG, WebP, GIF, TIFF or AVIF\)/);
    assert.equal(await page.isHidden('#result'), true, 'no answer beside the error');
    await shoot(page, 'error');
    await page.close();
  });

  test('a JPEG whose file has no extension, or a misleading one, is read from its bytes', async () => {
    const { page } = await open();
    const jpeg = await sharp(photo('chelsea.png')).jpeg().toBuffer();
    for (const [file, labels] of [[{ name: 'IMG_0042', mimeType: '', buffer: jpeg }, CAT_LABELS],
      [{ name: 'coffee.txt', mimeType: 'text/plain', buffer: photo('coffee.png') }, ['espresso']]]) {
      await page.setInputFiles('#file', file);
      await page.waitForFunction((name) => document.getElementById('meta').textContent.startsWith(`${name} ·`) ||
        !document.getElementById('error').hidden, file.name);
      assert.equal(await page.isHidden('#error'), true, await page.textContent('#error'));
      assert.ok(labels.includes(await page.textContent('#label')), `${file.name}: ${await page.textContent('#label')}`);
    }
    await page.close();
  });

  test('a file dropped anywhere on the page is taken, and the browser stays on the page', async () => {
    const { page } = await open();
    // On the heading, well outside the box: the page takes it, and the box shows it will.
    const onHeading = await drag(page, 'h1', [{ name: 'chelsea.png', type: 'image/png', bytes: photo('chelsea.png') }]);
    assert.deepEqual(onHeading, { enter: true, over: true, dragging: true, drop: true }, 'every drag event cancelled: the browser does not open the file');
    await page.waitForSelector('#label:not(:empty)');
    assert.ok(CAT_LABELS.includes(await page.textContent('#label')));
    assert.equal(page.url(), `${base}/`);
    assert.equal(await page.evaluate(() => document.body.classList.contains('dragging')), false);

    // While the file is over the page, before the drop: what the box looks like then.
    await page.evaluate(() => document.querySelector('main').dispatchEvent(new DragEvent('dragenter', { bubbles: true, cancelable: true })));
    await shoot(page, 'dragging');
    await page.evaluate(() => document.querySelector('main').dispatchEvent(new DragEvent('dragleave', { bubbles: true })));

    const onBody = await drag(page, 'body', [{ name: 'coffee', type: '', bytes: photo('coffee.png') }]);
    assert.equal(onBody.drop, true);
    await page.waitForFunction(() => document.getElementById('label').textContent === 'espresso');

    // A link, not a file: the page stays, and says what it needs.
    const link = await drag(page, 'p.hint', []);
    assert.equal(link.drop, true);
    assert.match(await page.textContent('#error-text'), /^Drop an image file/);
    assert.equal(page.url(), `${base}/`);
    await page.close();
  });

  test('while the model works: the new image and a busy note, the old answer gone; the last image chosen wins', async () => {
    const { page } = await open();
    await page.setInputFiles('#file', photoPath('chelsea.png'));
    await page.waitForSelector('#label:not(:empty)');

    holding = true;
    try {
      await page.setInputFiles('#file', photoPath('coffee.png'));
      await page.waitForSelector('#busy:not([hidden])');
      while (held.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(await page.textContent('#busy-text'), 'Asking the model about coffee.png…');
      assert.equal(await page.textContent('#label'), '', 'the last answer is gone');
      assert.equal(await page.locator('#top li').count(), 0);
      assert.equal(await page.textContent('#meta'), '');
      assert.equal(await page.getAttribute('#preview', 'alt'), 'coffee.png');
      await shoot(page, 'busy');

      // Another image while coffee.png waits: that one is shown, and coffee.png's answer, when it comes, is not.
      holding = false;
      await page.setInputFiles('#file', photoPath('chelsea.png'));
      await page.waitForSelector('#label:not(:empty)');
      assert.ok(CAT_LABELS.includes(await page.textContent('#label')));
      const [waiting] = held.splice(0);
      // Its request was given up (the page aborted it): nothing is answered. Or, were it not, answered.
      const done = new Promise((resolve) => (waiting.req.socket.destroyed ? resolve() : waiting.res.on('close', resolve)));
      waiting.release();
      await done;
      await page.waitForTimeout(300);
      assert.ok(CAT_LABELS.includes(await page.textContent('#label')), await page.textContent('#label'));
      assert.equal(await page.isHidden('#busy'), true);
      assert.match(await page.textContent('#meta'), /^chelsea\.png ·/);
    } finally {
      holding = false;
      for (const waiting of held.splice(0)) waiting.release();
    }
    await page.close();
  });

  test('the control: a button named "Choose an image" for screen readers, reached and opened with the keyboard', async () => {
    const { page } = await open();
    // Listening from the start turns on Chromium's interception of file choosers before any key is pressed;
    // waitForEvent alone turns it on without waiting, and a key pressed at once may beat it.
    const choosers = [];
    page.on('filechooser', (chooser) => choosers.push(chooser));
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'file', 'the first stop of the Tab key');
    const control = await accessible(page, '#file');
    assert.equal(control.role, 'button');
    assert.equal(control.name, 'Choose an image');
    // What is seen: a button with a focus ring, and no native "Choose File" beside it.
    const looks = await page.evaluate(() => {
      const label = getComputedStyle(document.querySelector('label[for=file]'));
      const input = document.getElementById('file').getBoundingClientRect();
      return { background: label.backgroundColor, outline: label.outlineStyle, outlineWidth: label.outlineWidth, input: input.width * input.height };
    });
    assert.deepEqual(looks, { background: 'rgb(192, 57, 43)', outline: 'solid', outlineWidth: '3px', input: 1 });
    await shoot(page, 'keyboard-focus');

    for (const [key, name] of [['Enter', 'chelsea.png'], ['Space', 'coffee.png']]) {
      await page.keyboard.press(key);
      for (let waited = 0; choosers.length === 0; waited += 10) {
        assert.ok(waited < 10_000, `${key} opened no file chooser`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await choosers.shift().setFiles(photoPath(name));
      await page.waitForFunction((chosen) => document.getElementById('meta').textContent.startsWith(`${chosen} ·`), name);
    }
    assert.equal(await page.textContent('#label'), 'espresso');
    await page.close();
  });

  test('the answer is announced: it appears inside a polite live region that is there before it', async () => {
    const { page } = await open();
    const region = await accessible(page, '#outcome');
    assert.equal(region.ignored, false, 'the live region is in the accessibility tree before any answer');
    assert.equal(region.properties.live, 'polite');
    await page.setInputFiles('#file', photoPath('chelsea.png'));
    await page.waitForSelector('#label:not(:empty)');
    for (const part of ['#label', '#top', '#meta']) assert.equal((await accessible(page, part)).live, 'polite', part);
    await page.setInputFiles('#file', { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('not an image') });
    await page.waitForSelector('#error:not([hidden])');
    const error = await accessible(page, '#error-text');
    assert.equal(error.live, 'assertive', `errors interrupt (role=alert): ${JSON.stringify(error)}`);
    await page.close();
  });

  test('the favicon: /favicon.ico answers the icon, and the page links one that Chromium draws', async () => {
    const response = await fetch(`${base}/favicon.ico`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'image/svg+xml');
    const { page, failed } = await open();
    const size = await page.evaluate(async () => {
      const image = new Image();
      image.src = document.querySelector('link[rel=icon]').href;
      await image.decode();
      return [image.naturalWidth, image.naturalHeight];
    });
    assert.deepEqual(size, [32, 32]);
    assert.deepEqual(failed, []);
    await page.close();
  });

  test('mounted at /vision in a host Express app: the page works from /vision and /vision/', async () => {
    const host = express();
    host.get('/', (req, res) => res.send('the host app'));
    host.use('/vision', createApp({ model, logger: pino({ level: 'silent' }) }));
    const mounted = await listen(host);
    try {
      for (const where of ['/vision', '/vision/']) {
        const { page, failed } = await open(`${mounted.base}${where}`);
        assert.equal(page.url(), `${mounted.base}/vision/`);
        assert.equal(await page.evaluate(() => getComputedStyle(document.querySelector('label[for=file]')).backgroundColor), 'rgb(192, 57, 43)',
          'page.css applied');
        await page.setInputFiles('#file', photoPath('chelsea.png'));
        await page.waitForFunction(() => document.getElementById('label').textContent !== '' || !document.getElementById('error').hidden);
        assert.ok(CAT_LABELS.includes(await page.textContent('#label')), await page.textContent('#error'));
        assert.equal(await page.evaluate(() => document.querySelector('link[rel=icon]').href), `${mounted.base}/vision/favicon.ico`);
        assert.deepEqual(failed, [], `${where}: nothing the page asked for failed`);
        if (where === '/vision') await shoot(page, 'mounted');
        await page.close();
      }
      // /vision is sent to /vision/, relative to itself, with its query.
      const bare = await fetch(`${mounted.base}/vision?from=a%20link`, { redirect: 'manual' });
      assert.equal(bare.status, 301);
      assert.equal(bare.headers.get('location'), './vision/?from=a%20link');
      assert.equal(await (await fetch(`${mounted.base}/`)).text(), 'the host app');
    } finally {
      mounted.server.close();
    }
  });

  test('with API keys: the page asks for one, refuses odd bytes unsent, sends the key typed in, and keeps it for the tab only', async () => {
    const key = 'page-key-0123456789abcdef012345';
    const lines = [];
    const logger = pino({ level: 'info' }, { write: (line) => lines.push(line) });
    const keyed = await listen(createApp({ model, logger, apiKeys: [{ key, scope: 'infer' }] }));
    try {
      const { page } = await open(keyed.base);
      const posts = [];
      page.on('request', (request) => request.method() === 'POST' && posts.push(request));
      const errorText = async () => (await page.isHidden('#error') ? null : page.textContent('#error-text'));
      assert.equal(await page.isHidden('#key-form'), true, 'no key field until the server asks for one');

      await page.setInputFiles('#file', photoPath('chelsea.png'));
      await page.waitForSelector('#error:not([hidden])');
      assert.equal(await errorText(), 'This server needs an API key: type it in the API key field (E_UNAUTHORIZED)');
      assert.equal(await page.isVisible('#key'), true);
      assert.equal(await page.evaluate(() => document.activeElement.id), 'key', 'where to type it');
      assert.equal((await accessible(page, '#key')).name, 'API key');
      await shoot(page, 'key-needed');

      for (const odd of ['ключ-0123456789abcdef', 'two words 0123456789abcdef', '"quoted-0123456789abcdef"', `${key}🔑`]) {
        const before = posts.length;
        await page.fill('#key', odd);
        await page.press('#key', 'Enter');
        await page.waitForFunction(() => document.getElementById('error-text').textContent.startsWith('That is not an API key'));
        assert.equal(posts.length, before, `${odd}: nothing sent`);
        assert.equal(await page.evaluate(() => sessionStorage.getItem('choripan.apiKey')), null, `${odd}: not kept`);
      }

      await page.fill('#key', 'wrong-key-0123456789abcdef0123');
      await page.click('#key-form button');
      await page.waitForFunction(() => /not accepted/.test(document.getElementById('error-text').textContent));
      assert.equal(await errorText(), 'That API key was not accepted: check it and try again (E_UNAUTHORIZED)');

      await page.fill('#key', ` ${key} `); // as pasted, with the spaces around it
      await page.press('#key', 'Enter');
      await page.waitForSelector('#label:not(:empty)');
      assert.ok(CAT_LABELS.includes(await page.textContent('#label')), 'the photo is sent again, with the key');
      assert.equal(await page.isHidden('#error'), true);
      assert.equal(await posts.at(-1).headerValue('authorization'), `Bearer ${key}`);
      assert.equal(await page.evaluate(() => sessionStorage.getItem('choripan.apiKey')), key);
      assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing kept beyond the tab');
      assert.equal(page.url(), `${keyed.base}/`, 'no key in the URL');
      assert.ok(!(await page.content()).includes(key), 'no key in the page\'s HTML');
      await shoot(page, 'key-given');

      // The same tab, reloaded: the key is still there, and the next photo needs nothing more.
      await page.reload();
      assert.equal(await page.isVisible('#key'), true);
      await page.setInputFiles('#file', photoPath('coffee.png'));
      await page.waitForFunction(() => document.getElementById('label').textContent === 'espresso');
      // Another tab starts without it.
      const other = await open(keyed.base);
      assert.equal(await other.page.isHidden('#key-form'), true);
      assert.equal(await other.page.evaluate(() => sessionStorage.length), 0);
      await other.page.close();
      // An empty field forgets it: refused again.
      await page.fill('#key', '');
      await page.press('#key', 'Enter');
      await page.waitForFunction(() => /needs an API key/.test(document.getElementById('error-text').textContent));
      assert.equal(await page.evaluate(() => sessionStorage.getItem('choripan.apiKey')), null);
      await page.close();
      assert.ok(lines.some((line) => line.includes('"status":200')), 'the log has the requests');
      assert.ok(!lines.some((line) => line.includes(key)), 'and never the key');
    } finally {
      keyed.server.close();
    }
  });

  test('on a narrow screen the answer stacks under the image', async () => {
    const { page } = await open();
    await page.setViewportSize({ width: 380, height: 700 });
    await page.setInputFiles('#file', photoPath('chelsea.png'));
    await page.waitForSelector('#label:not(:empty)');
    const [image, label] = await Promise.all(['#preview', '#label'].map((s) => page.locator(s).boundingBox()));
    assert.ok(label.y > image.y + image.height - 1, 'the label is under the image');
    await shoot(page, 'narrow');
    await page.close();
  });
});
