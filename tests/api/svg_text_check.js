// Texts of an inline SVG outside the box they sit in, or overlapping another text, as the browser measures
// them (used by test_web_page.py: page.evaluate(this, selector)).
sel => {
  const root = document.querySelector(sel);
  if (!root) return ['no ' + sel];
  const vb = root.viewBox.baseVal;
  const rects = Array.from(root.querySelectorAll('rect'))
    .filter(r => !(r.width.baseVal.value >= vb.width - 1 && r.height.baseVal.value >= vb.height - 1))
    .map(r => ({x: r.x.baseVal.value, y: r.y.baseVal.value, w: r.width.baseVal.value, h: r.height.baseVal.value}));
  const texts = Array.from(root.querySelectorAll('text')).filter(t => t.textContent.trim());
  const boxes = texts.map(t => { const b = t.getBBox(); return {t: t.textContent, x: b.x, y: b.y, w: b.width, h: b.height,
    ax: t.x.baseVal.length ? t.x.baseVal[0].value : b.x, cy: b.y + b.height / 2}; });
  const problems = [];
  for (const b of boxes) {
    if (b.x < -0.5 || b.x + b.w > vb.width + 0.5) problems.push('outside the picture: ' + b.t);
    const inside = rects.filter(r => b.ax >= r.x && b.ax <= r.x + r.w && b.cy >= r.y && b.cy <= r.y + r.h);
    for (const r of inside) {
      if (b.x < r.x - 0.5 || b.x + b.w > r.x + r.w + 0.5) problems.push(`overflows its box (${b.w.toFixed(0)} > ${r.w}): ${b.t}`);
    }
  }
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i], c = boxes[j];
    const ow = Math.min(a.x + a.w, c.x + c.w) - Math.max(a.x, c.x);
    const oh = Math.min(a.y + a.h, c.y + c.h) - Math.max(a.y, c.y);
    if (ow > 1 && oh > 2) problems.push(`overlap: "${a.t}" and "${c.t}"`);
  }
  return problems;
}
