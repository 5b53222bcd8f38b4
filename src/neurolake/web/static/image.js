/* neurolake image explorer: a 2-D pan/zoom view over the CATMAID tile route (plain JS, no build).
 *
 * Reads its configuration from <script id="image-config" type="application/json">:
 *   {datastack, layer, tile, tileUrl ("/catmaid/{ds}/{layer}/xy/{z}/{row}_{col}_{mip}.jpg"), sizes (per mip,
 *    [x, y, z] voxels), x, y, z (mip-0 voxels: the view centre and section), mip, viewer, page}
 * One tile pixel is one CSS pixel: zooming changes the mip. State (x, y, z, mip) is kept in the URL with
 * history.replaceState, so a shared link reopens the same view.
 */
(function () {
  "use strict";
  var cfgEl = document.getElementById("image-config");
  var view = document.getElementById("image-view");
  if (!cfgEl || !view) return;
  var cfg = JSON.parse(cfgEl.textContent);
  var T = cfg.tile, sizes = cfg.sizes, nMips = sizes.length;
  var st = { x: cfg.x, y: cfg.y, z: cfg.z, mip: cfg.mip };
  var tiles = {};  // url -> <img>
  var slider = document.getElementById("z-slider");
  var pos = document.getElementById("image-pos");
  var ngLink = document.getElementById("ng-link");
  var form = document.getElementById("layer-form");

  function factor(axis, mip) {  // downsampling factor of mip along axis 0 (x) or 1 (y)
    return Math.max(1, Math.round(sizes[0][axis] / sizes[mip][axis]));
  }
  function clamp(v, lo, hi) { return Math.min(hi, Math.max(lo, v)); }
  function tileUrl(row, col) {
    return cfg.tileUrl.replace("{z}", String(st.z)).replace("{row}", String(row))
      .replace("{col}", String(col)).replace("{mip}", String(st.mip));
  }

  function draw() {
    var W = view.clientWidth, H = view.clientHeight;
    var fx = factor(0, st.mip), fy = factor(1, st.mip);
    var cx = (st.x + 0.5) / fx, cy = (st.y + 0.5) / fy;  // view centre in mip pixels
    var left = cx - W / 2, top = cy - H / 2;
    var nCols = Math.ceil(sizes[st.mip][0] / T), nRows = Math.ceil(sizes[st.mip][1] / T);
    var c0 = clamp(Math.floor(left / T), 0, nCols - 1), c1 = clamp(Math.floor((left + W) / T), 0, nCols - 1);
    var r0 = clamp(Math.floor(top / T), 0, nRows - 1), r1 = clamp(Math.floor((top + H) / T), 0, nRows - 1);
    var want = {};
    for (var r = r0; r <= r1; r++) {
      for (var c = c0; c <= c1; c++) {
        if ((c + 1) * T <= left || c * T >= left + W || (r + 1) * T <= top || r * T >= top + H) continue;
        var url = tileUrl(r, c);
        var img = tiles[url];
        if (!img) {
          img = document.createElement("img");
          img.alt = "";
          img.draggable = false;
          img.decoding = "async";
          img.src = url;
          tiles[url] = img;
          view.insertBefore(img, view.firstChild);
        }
        img.style.left = Math.round(c * T - left) + "px";
        img.style.top = Math.round(r * T - top) + "px";
        want[url] = true;
      }
    }
    for (var u in tiles) {
      if (!want[u]) { tiles[u].remove(); delete tiles[u]; }
    }
    report();
  }

  var urlTimer = null;
  function report() {
    if (pos) pos.textContent = "x " + st.x + " · y " + st.y + " · z " + st.z + " · mip " + st.mip;
    if (slider && Number(slider.value) !== st.z) slider.value = String(st.z);
    if (ngLink) ngLink.href = cfg.viewer + "?position=" + st.x + "," + st.y + "," + st.z + ".5";
    if (form) {
      ["x", "y", "z", "mip"].forEach(function (k) {
        var inp = form.querySelector('input[name="' + k + '"]');
        if (inp) inp.value = String(st[k]);
      });
    }
    if (urlTimer) clearTimeout(urlTimer);
    urlTimer = setTimeout(function () {
      var q = new URLSearchParams({ layer: cfg.layer, x: st.x, y: st.y, z: st.z, mip: st.mip });
      history.replaceState(null, "", cfg.page + "?" + q.toString());
    }, 150);
  }

  function panBy(dxScreen, dyScreen) {  // move the content by (dx, dy) screen pixels
    st.x = clamp(Math.round(st.x - dxScreen * factor(0, st.mip)), 0, sizes[0][0] - 1);
    st.y = clamp(Math.round(st.y - dyScreen * factor(1, st.mip)), 0, sizes[0][1] - 1);
    draw();
  }

  // zoom by one mip step (+1 = coarser), keeping the voxel under screen point (sx, sy) in place
  function zoom(step, sx, sy) {
    var m = clamp(st.mip + step, 0, nMips - 1);
    if (m === st.mip) return;
    var W = view.clientWidth, H = view.clientHeight;
    if (sx === undefined) { sx = W / 2; sy = H / 2; }
    var ox = sx - W / 2, oy = sy - H / 2;
    var wx = st.x + ox * factor(0, st.mip), wy = st.y + oy * factor(1, st.mip);
    st.mip = m;
    st.x = clamp(Math.round(wx - ox * factor(0, m)), 0, sizes[0][0] - 1);
    st.y = clamp(Math.round(wy - oy * factor(1, m)), 0, sizes[0][1] - 1);
    draw();
  }

  function setZ(z) {
    z = clamp(Math.round(z), 0, sizes[0][2] - 1);
    if (z === st.z) return;
    st.z = z;
    draw();
  }

  // pointer drag (mouse, pen, one finger) and pinch (two fingers)
  var pointers = {}, pinchDist = null;
  function pinchDistance() {
    var ps = Object.keys(pointers).map(function (k) { return pointers[k]; });
    if (ps.length < 2) return null;
    return Math.hypot(ps[0].x - ps[1].x, ps[0].y - ps[1].y);
  }
  view.addEventListener("pointerdown", function (e) {
    view.focus({ preventScroll: true });
    try { view.setPointerCapture(e.pointerId); } catch (err) { /* pointer already gone */ }
    pointers[e.pointerId] = { x: e.clientX, y: e.clientY };
    pinchDist = pinchDistance();
    view.classList.add("dragging");
  });
  view.addEventListener("pointermove", function (e) {
    var p = pointers[e.pointerId];
    if (!p) return;
    var n = Object.keys(pointers).length;
    var dx = e.clientX - p.x, dy = e.clientY - p.y;
    p.x = e.clientX; p.y = e.clientY;
    if (n === 1) { panBy(dx, dy); return; }
    var d = pinchDistance();
    if (pinchDist && d) {
      if (d / pinchDist > 1.6) { zoom(-1); pinchDist = d; }
      else if (d / pinchDist < 0.625) { zoom(1); pinchDist = d; }
    }
  });
  function release(e) {
    delete pointers[e.pointerId];
    pinchDist = pinchDistance();
    if (!Object.keys(pointers).length) view.classList.remove("dragging");
  }
  view.addEventListener("pointerup", release);
  view.addEventListener("pointercancel", release);

  var wheelAcc = 0, wheelAt = 0;
  view.addEventListener("wheel", function (e) {
    e.preventDefault();
    var rect = view.getBoundingClientRect();
    if (e.shiftKey) { setZ(st.z + (e.deltaY > 0 ? 1 : -1)); return; }
    wheelAcc += e.deltaMode === 1 ? e.deltaY * 33 : e.deltaY;
    var now = Date.now();
    if (Math.abs(wheelAcc) >= 60 && now - wheelAt > 120) {
      zoom(wheelAcc > 0 ? 1 : -1, e.clientX - rect.left, e.clientY - rect.top);
      wheelAcc = 0; wheelAt = now;
    }
  }, { passive: false });

  function onKey(e) {
    var t = e.target && e.target.tagName;
    if (t === "INPUT" || t === "SELECT" || t === "TEXTAREA") return;
    var step = 64, k = e.key;
    if (k === "+" || k === "=") zoom(-1);
    else if (k === "-" || k === "_") zoom(1);
    else if (k === "," || k === "PageUp") setZ(st.z - 1);
    else if (k === "." || k === "PageDown") setZ(st.z + 1);
    else if (k === "ArrowLeft") panBy(step, 0);
    else if (k === "ArrowRight") panBy(-step, 0);
    else if (k === "ArrowUp") panBy(0, step);
    else if (k === "ArrowDown") panBy(0, -step);
    else return;
    e.preventDefault();
  }
  view.addEventListener("keydown", onKey);

  function on(id, fn) { var el = document.getElementById(id); if (el) el.addEventListener("click", fn); }
  on("zoom-in", function () { zoom(-1); });
  on("zoom-out", function () { zoom(1); });
  on("z-down", function () { setZ(st.z - 1); });
  on("z-up", function () { setZ(st.z + 1); });
  if (slider) slider.addEventListener("input", function () { setZ(Number(slider.value)); });
  var sel = document.getElementById("layer-select");
  if (sel && form) sel.addEventListener("change", function () { form.submit(); });

  window.addEventListener("resize", draw);
  draw();
  window.neurolakeImage = { state: st, draw: draw, zoom: zoom, setZ: setZ, panBy: panBy };
})();
