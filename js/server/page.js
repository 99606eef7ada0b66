'use strict';
// The page at /, to try a photo: plain HTML, CSS and JS from js/server/page/, no build step and nothing
// from elsewhere.

const path = require('node:path');
const express = require('express');
const { PATHS } = require('./paths');

const FOLDER = path.join(__dirname, 'page');

function createPageRouter() {
  const router = express.Router();
  // Its links are relative, so that it works wherever it is mounted, and behind a proxy that strips a
  // prefix; mounted at /vision, a request for /vision would resolve them against the host's root, so it
  // is sent to /vision/ first (as serve-static does for a folder). The Location names only the last
  // segment, relative to the request ("./vision/"): no input can make it point at another host.
  router.get(PATHS.page, (req, res) => {
    const url = req.originalUrl;
    const pathname = url.includes('?') ? url.slice(0, url.indexOf('?')) : url;
    if (pathname.endsWith('/')) return res.sendFile(path.join(FOLDER, 'index.html'));
    return res.redirect(301, `./${pathname.slice(pathname.lastIndexOf('/') + 1)}/${url.slice(pathname.length)}`);
  });
  router.get(PATHS.pageScript, (req, res) => res.sendFile(path.join(FOLDER, 'page.js')));
  router.get(PATHS.pageStyle, (req, res) => res.sendFile(path.join(FOLDER, 'page.css')));
  // An SVG, which every browser that shows favicons reads by its type, whatever the name.
  router.get(PATHS.favicon, (req, res) => res.sendFile(path.join(FOLDER, 'favicon.svg')));
  return router;
}

module.exports = { createPageRouter };
