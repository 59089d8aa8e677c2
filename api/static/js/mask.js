// The inpainting mask: painted over the image with a pointer (or the keyboard: arrows move the brush,
// Space paints), kept at the image's own pixel size, and sent as white (repaint) on black (keep).

export class MaskPainter {
  constructor(canvas, cursor, brushInput, onChange) {
    this.canvas = canvas;
    this.cursor = cursor;
    this.brushInput = brushInput;
    this.onChange = onChange;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.at = null;
    this.keyboard = { x: 0, y: 0 };
    canvas.addEventListener("pointerdown", (e) => this.start(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    for (const type of ["pointerup", "pointercancel", "pointerleave"]) canvas.addEventListener(type, () => (this.at = null));
    canvas.addEventListener("keydown", (e) => this.key(e));
    canvas.addEventListener("blur", () => (this.cursor.hidden = true));
  }

  // A fresh, empty mask the size of the image.
  reset(width, height) {
    this.canvas.width = width;
    this.canvas.height = height;
    this.keyboard = { x: Math.floor(width / 2), y: Math.floor(height / 2) };
    this.changed();
  }

  get brush() {
    return Math.max(1, (Number(this.brushInput.value) / 100) * this.canvas.width);
  }

  point(event) {
    const box = this.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * this.canvas.width) / box.width,
      y: ((event.clientY - box.top) * this.canvas.height) / box.height,
    };
  }

  start(event) {
    event.preventDefault();
    this.canvas.setPointerCapture?.(event.pointerId);
    this.at = this.point(event);
    this.stroke(this.at, this.at);
  }

  move(event) {
    if (!this.at) return;
    const next = this.point(event);
    this.stroke(this.at, next);
    this.at = next;
  }

  stroke(from, to) {
    const ctx = this.ctx;
    ctx.strokeStyle = ctx.fillStyle = "rgb(255, 64, 160)";
    ctx.lineWidth = this.brush;
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x + 0.01, to.y);
    ctx.stroke();
    this.changed();
  }

  key(event) {
    const steps = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    const { width, height } = this.canvas;
    const step = Math.max(1, Math.round(this.brush / 2));
    if (steps[event.key]) {
      const [dx, dy] = steps[event.key];
      this.keyboard.x = Math.min(width - 1, Math.max(0, this.keyboard.x + dx * step));
      this.keyboard.y = Math.min(height - 1, Math.max(0, this.keyboard.y + dy * step));
      if (event.shiftKey) this.stroke(this.center(), this.center());
    } else if (event.key === " " || event.key === "Enter") {
      this.stroke(this.center(), this.center());
    } else {
      return;
    }
    event.preventDefault();
    this.showCursor();
  }

  center() {
    return { x: this.keyboard.x + 0.5, y: this.keyboard.y + 0.5 };
  }

  showCursor() {
    const scale = this.canvas.clientWidth / this.canvas.width;
    const size = this.brush * scale;
    Object.assign(this.cursor.style, {
      width: `${size}px`, height: `${size}px`,
      left: `${(this.keyboard.x + 0.5) * scale - size / 2}px`, top: `${(this.keyboard.y + 0.5) * scale - size / 2}px`,
    });
    this.cursor.hidden = false;
  }

  fill() {
    this.ctx.fillStyle = "rgb(255, 64, 160)";
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.changed();
  }

  clear() {
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.changed();
  }

  invert() {
    const pixels = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
    for (let i = 0; i < pixels.data.length; i += 4) {
      const painted = pixels.data[i + 3] >= 128;
      pixels.data.set(painted ? [0, 0, 0, 0] : [255, 64, 160, 255], i);
    }
    this.ctx.putImageData(pixels, 0, 0);
    this.changed();
  }

  // Share of the image marked for repainting (0..1).
  coverage() {
    const { data } = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
    let painted = 0;
    for (let i = 3; i < data.length; i += 4) painted += data[i] >= 128 ? 1 : 0;
    return painted / (data.length / 4);
  }

  changed() {
    this.onChange?.(this.coverage());
  }

  // The mask as a PNG data URL, white where painted and black elsewhere; null when nothing is painted.
  toDataURL() {
    if (this.coverage() === 0) return null;
    const { width, height } = this.canvas;
    const pixels = this.ctx.getImageData(0, 0, width, height);
    for (let i = 0; i < pixels.data.length; i += 4) {
      const value = pixels.data[i + 3] >= 128 ? 255 : 0;
      pixels.data.set([value, value, value, 255], i);
    }
    const out = document.createElement("canvas");
    out.width = width;
    out.height = height;
    out.getContext("2d").putImageData(pixels, 0, 0);
    return out.toDataURL("image/png");
  }
}
