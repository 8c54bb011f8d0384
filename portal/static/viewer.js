// RadAssist's image viewer: the scan's full-resolution pixels (HU for CT DICOM, grey otherwise) windowed here, so
// dragging the window is smooth; zoom and pan; Grad-CAM and lesion-outline overlays with their opacity; a ruler in
// mm where the pixel spacing is known. Mouse, touch (one finger drags, two pinch) and keyboard. No dependencies.
(function () {
  "use strict";

  const OUTLINE = [255, 214, 0];  // the portal's lesion colour

  class Viewport {
    constructor(root) {
      this.root = root;
      this.canvas = root.querySelector("canvas.viewer-canvas");
      this.context = this.canvas.getContext("2d");
      this.status = root.querySelector(".viewer-status");
      this.tool = "pan";
      this.zoom = 1; this.panX = 0; this.panY = 0;
      this.overlays = {};
      this.ruler = null;
      this.pointers = new Map();
    }

    async load(scanUrl, overlays) {
      const described = await (await fetch(scanUrl, {credentials: "same-origin"})).json();
      const buffer = await (await fetch(described.pixels_url, {credentials: "same-origin"})).arrayBuffer();
      this.meta = described;
      this.presets = new Map(described.presets.map(([name, centre, width]) => [name, [centre, width]]));
      this.values = new Int16Array(buffer);
      this.image = document.createElement("canvas");
      this.image.width = described.columns; this.image.height = described.rows;
      this.pixels = this.image.getContext("2d").createImageData(described.columns, described.rows);
      this.setPreset(described.default);
      for (const [name, spec] of Object.entries(overlays || {})) await this.addOverlay(name, spec);
      this.fit();
      this.bind();
      this.root.dataset.ready = "1";
      this.root.dispatchEvent(new CustomEvent("viewer-ready"));
    }

    async addOverlay(name, spec) {
      const picture = new Image();
      picture.src = spec.url;
      await picture.decode();
      let layer = picture;
      if (spec.outline) layer = outlineOf(picture);
      this.overlays[name] = {layer, on: spec.on !== false, opacity: spec.opacity ?? 0.8};
    }

    setPreset(name) {
      const [centre, width] = this.presets.get(name);
      this.preset = name;
      this.setWindow(centre, width);
    }

    setWindow(centre, width) {
      this.centre = centre; this.width = Math.max(1, width);
      const low = this.centre - this.width / 2, scale = 255 / this.width;
      const out = this.pixels.data, values = this.values;
      for (let i = 0, j = 0; i < values.length; i++, j += 4) {
        let grey = (values[i] - low) * scale;
        grey = grey < 0 ? 0 : grey > 255 ? 255 : grey;
        out[j] = out[j + 1] = out[j + 2] = grey; out[j + 3] = 255;
      }
      this.image.getContext("2d").putImageData(this.pixels, 0, 0);
      this.root.dispatchEvent(new CustomEvent("viewer-window"));
      this.draw();
    }

    fit() {
      const box = this.root.querySelector(".viewer-stage").getBoundingClientRect();
      const side = Math.max(200, Math.floor(box.width));
      this.canvas.width = side; this.canvas.height = Math.round(side * Math.min(1.2, this.meta.rows / this.meta.columns));
      this.zoom = Math.min(this.canvas.width / this.meta.columns, this.canvas.height / this.meta.rows);
      this.panX = (this.canvas.width - this.meta.columns * this.zoom) / 2;
      this.panY = (this.canvas.height - this.meta.rows * this.zoom) / 2;
      this.draw();
    }

    toImage(x, y) { return [(x - this.panX) / this.zoom, (y - this.panY) / this.zoom]; }

    zoomAt(factor, x, y) {
      const next = Math.min(40, Math.max(0.05, this.zoom * factor));
      const [ix, iy] = this.toImage(x, y);
      this.zoom = next; this.panX = x - ix * next; this.panY = y - iy * next;
      this.draw();
    }

    draw() {
      if (!this.meta) return;
      const c = this.context;
      c.setTransform(1, 0, 0, 1, 0, 0);
      c.fillStyle = "#000"; c.fillRect(0, 0, this.canvas.width, this.canvas.height);
      c.imageSmoothingEnabled = this.zoom < 2;  // crisp pixels when zoomed in
      c.setTransform(this.zoom, 0, 0, this.zoom, this.panX, this.panY);
      c.drawImage(this.image, 0, 0);
      for (const overlay of Object.values(this.overlays)) {
        if (!overlay.on || overlay.opacity <= 0) continue;
        c.globalAlpha = overlay.opacity;
        c.drawImage(overlay.layer, 0, 0, this.meta.columns, this.meta.rows);  // overlays are at the stored size
        c.globalAlpha = 1;
      }
      if (this.ruler) this.drawRuler(c);
      c.setTransform(1, 0, 0, 1, 0, 0);
      const unit = this.meta.unit === "HU" ? " HU" : "";
      const label = this.meta.unit === "HU" ? "W/L" : "Contrast/brightness";
      this.status.textContent = `${label} ${Math.round(this.width)}/${Math.round(this.centre)}${unit} · zoom ${Math.round(this.zoom * 100)}%` +
        (this.ruler ? ` · ruler ${this.rulerText()}` : "");
    }

    rulerLength() {
      const [a, b] = this.ruler;
      const spacing = this.meta.pixel_spacing_mm;
      if (spacing) return {value: Math.hypot((b[0] - a[0]) * spacing[1], (b[1] - a[1]) * spacing[0]), unit: "mm"};
      return {value: Math.hypot(b[0] - a[0], b[1] - a[1]), unit: "px"};
    }

    rulerText() { const {value, unit} = this.rulerLength(); return `${value.toFixed(1)} ${unit}`; }

    drawRuler(c) {
      const [a, b] = this.ruler;
      c.lineWidth = 2 / this.zoom; c.strokeStyle = "#00e5ff";
      c.beginPath(); c.moveTo(a[0], a[1]); c.lineTo(b[0], b[1]); c.stroke();
      c.font = `${14 / this.zoom}px system-ui, sans-serif`; c.fillStyle = "#00e5ff";
      c.fillText(this.rulerText(), b[0] + 6 / this.zoom, b[1] - 6 / this.zoom);
    }

    bind() {
      const canvas = this.canvas;
      canvas.addEventListener("wheel", (event) => {
        event.preventDefault();
        const box = canvas.getBoundingClientRect();
        this.zoomAt(event.deltaY < 0 ? 1.15 : 1 / 1.15, event.clientX - box.left, event.clientY - box.top);
      }, {passive: false});
      canvas.addEventListener("pointerdown", (event) => {
        canvas.setPointerCapture(event.pointerId);
        canvas.focus();
        const box = canvas.getBoundingClientRect();
        const at = [event.clientX - box.left, event.clientY - box.top];
        this.pointers.set(event.pointerId, at);
        this.drag = {at, centre: this.centre, width: this.width, panX: this.panX, panY: this.panY};
        if (this.tool === "measure" && this.pointers.size === 1) {
          const point = this.toImage(...at);
          this.ruler = [point, point];
        }
      });
      canvas.addEventListener("pointermove", (event) => {
        if (!this.pointers.has(event.pointerId)) return;
        const box = canvas.getBoundingClientRect();
        const at = [event.clientX - box.left, event.clientY - box.top];
        if (this.pointers.size === 2) {  // pinch: zoom about the fingers' midpoint
          const [first, second] = [...this.pointers.values()];
          const before = Math.hypot(first[0] - second[0], first[1] - second[1]);
          this.pointers.set(event.pointerId, at);
          const [p, q] = [...this.pointers.values()];
          const after = Math.hypot(p[0] - q[0], p[1] - q[1]);
          if (before > 0) this.zoomAt(after / before, (p[0] + q[0]) / 2, (p[1] + q[1]) / 2);
          return;
        }
        this.pointers.set(event.pointerId, at);
        const dx = at[0] - this.drag.at[0], dy = at[1] - this.drag.at[1];
        if (this.tool === "pan") { this.panX = this.drag.panX + dx; this.panY = this.drag.panY + dy; this.draw(); }
        else if (this.tool === "window") {  // right: wider; down: higher level (as CT viewers do)
          const step = Math.max(1, this.drag.width / 200);
          this.setWindow(this.drag.centre + dy * step, this.drag.width + dx * step);
        } else if (this.tool === "measure" && this.ruler) { this.ruler[1] = this.toImage(...at); this.draw(); }
      });
      const up = (event) => {
        this.pointers.delete(event.pointerId);
        if (this.tool === "measure" && this.ruler) this.root.dispatchEvent(new CustomEvent("viewer-measured"));
      };
      canvas.addEventListener("pointerup", up);
      canvas.addEventListener("pointercancel", up);
      canvas.addEventListener("keydown", (event) => {
        const step = 40;
        const moves = {ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step]};
        if (moves[event.key]) {
          this.panX += moves[event.key][0]; this.panY += moves[event.key][1]; this.draw(); event.preventDefault();
        }
      });
      window.addEventListener("resize", () => this.fit());
    }
  }

  // The lesion mask (white = lesion) as its amber outline: mask pixels with a 4-neighbour outside the mask.
  function outlineOf(picture) {
    const canvas = document.createElement("canvas");
    canvas.width = picture.naturalWidth; canvas.height = picture.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(picture, 0, 0);
    const mask = context.getImageData(0, 0, canvas.width, canvas.height);
    const out = context.createImageData(canvas.width, canvas.height);
    const w = canvas.width, h = canvas.height, inside = (x, y) => x >= 0 && y >= 0 && x < w && y < h && mask.data[(y * w + x) * 4] > 127;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      if (!inside(x, y) || (inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1))) continue;
      const j = (y * w + x) * 4;
      out.data[j] = OUTLINE[0]; out.data[j + 1] = OUTLINE[1]; out.data[j + 2] = OUTLINE[2]; out.data[j + 3] = 255;
    }
    context.putImageData(out, 0, 0);
    return canvas;
  }

  function setup(root) {
    const viewport = new Viewport(root);
    const overlays = JSON.parse(root.dataset.overlays || "{}");
    const controls = root.querySelector(".viewer-controls");
    viewport.load(root.dataset.scan, overlays).then(() => {
      const presets = controls.querySelector("select[name=preset]");
      for (const name of viewport.presets.keys()) presets.add(new Option(name, name, false, name === viewport.meta.default));
      presets.addEventListener("change", () => viewport.setPreset(presets.value));
      const [centreInput, widthInput] = [controls.querySelector("input[name=centre]"), controls.querySelector("input[name=width]")];
      const [low, high] = viewport.meta.range;
      centreInput.min = low; centreInput.max = high; widthInput.min = 1; widthInput.max = Math.max(2, 2 * (high - low));
      presets.add(new Option("custom", "custom"));
      presets.options[presets.options.length - 1].disabled = true;
      const syncInputs = () => {
        centreInput.value = viewport.centre; widthInput.value = viewport.width;
        const match = [...viewport.presets].find(([, [c, w]]) => c === viewport.centre && w === viewport.width);
        presets.value = match ? match[0] : "custom";
      };
      root.addEventListener("viewer-window", syncInputs);
      syncInputs();
      const fromInputs = () => viewport.setWindow(Number(centreInput.value), Number(widthInput.value));
      centreInput.addEventListener("input", fromInputs); widthInput.addEventListener("input", fromInputs);
      for (const button of controls.querySelectorAll("button[data-tool]")) {
        button.addEventListener("click", () => selectTool(button.dataset.tool));
      }
      controls.querySelector("button[data-action=zoom-in]").addEventListener("click", () => viewport.zoomAt(1.25, viewport.canvas.width / 2, viewport.canvas.height / 2));
      controls.querySelector("button[data-action=zoom-out]").addEventListener("click", () => viewport.zoomAt(0.8, viewport.canvas.width / 2, viewport.canvas.height / 2));
      controls.querySelector("button[data-action=reset]").addEventListener("click", () => { viewport.ruler = null; viewport.fit(); });
      for (const [name, overlay] of Object.entries(viewport.overlays)) {
        const toggle = controls.querySelector(`input[name=overlay-${name}]`);
        const opacity = controls.querySelector(`input[name=opacity-${name}]`);
        if (!toggle) continue;
        toggle.checked = overlay.on; opacity.value = Math.round(overlay.opacity * 100);
        toggle.addEventListener("change", () => { overlay.on = toggle.checked; viewport.draw(); });
        opacity.addEventListener("input", () => { overlay.opacity = opacity.value / 100; viewport.draw(); });
      }
      const unit = controls.querySelector(".window-unit");
      if (unit) unit.textContent = viewport.meta.unit === "HU" ? "Window/level (HU)" : "Brightness/contrast";
    });
    function selectTool(tool) {
      viewport.tool = tool;
      for (const button of controls.querySelectorAll("button[data-tool]")) button.setAttribute("aria-pressed", String(button.dataset.tool === tool));
    }
    root.viewport = viewport;
    root.selectTool = selectTool;
    return root;
  }

  const viewers = Array.from(document.querySelectorAll(".viewer[data-scan]")).map(setup);
  // Keys for the first viewer (the report's scan): not while typing in a form field.
  document.addEventListener("keydown", (event) => {
    if (!viewers.length || event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    const root = viewers[0], viewport = root.viewport;
    if (!viewport.meta) return;
    const centre = [viewport.canvas.width / 2, viewport.canvas.height / 2];
    const presets = [...viewport.presets.keys()];
    const actions = {
      "+": () => viewport.zoomAt(1.25, ...centre), "=": () => viewport.zoomAt(1.25, ...centre),
      "-": () => viewport.zoomAt(0.8, ...centre), "0": () => { viewport.ruler = null; viewport.fit(); },
      "h": () => root.selectTool("pan"), "w": () => root.selectTool("window"), "m": () => root.selectTool("measure"),
      "Escape": () => { viewport.ruler = null; viewport.draw(); },
      "g": () => toggle(root, "gradcam"), "l": () => toggle(root, "lesions"),
    };
    if (/^[1-9]$/.test(event.key) && presets[Number(event.key) - 1]) actions[event.key] = () => viewport.setPreset(presets[Number(event.key) - 1]);
    if (actions[event.key]) { actions[event.key](); event.preventDefault(); }
  });
  function toggle(root, name) {
    const input = root.querySelector(`input[name=overlay-${name}]`);
    if (input) { input.checked = !input.checked; input.dispatchEvent(new Event("change")); }
  }

  // Comparison: another scan of the same patient opens in the second viewport, beside the first.
  for (const button of document.querySelectorAll("button[data-compare-scan]")) {
    button.addEventListener("click", () => {
      const holder = document.getElementById("compare-viewer");
      const template = document.getElementById("compare-template");
      holder.innerHTML = "";
      const root = template.content.firstElementChild.cloneNode(true);
      root.dataset.scan = button.dataset.compareScan;
      root.querySelector(".viewer-title").textContent = button.dataset.compareTitle;
      holder.appendChild(root);
      holder.hidden = false;
      setup(root);
    });
  }
})();
