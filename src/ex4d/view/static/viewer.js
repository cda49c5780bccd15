// ex4d view: the DW-Mesh of every frame drawn with raw WebGL2 from a colour + depth stream (no dependencies).
//
// Conventions are ex4d's (docs/conventions.md): OpenCV camera axes (x right, y down, z forward), world = the
// source camera, w2c world-to-camera, K in pixels, pixel (v, u) sampled at (u + 0.5, v + 0.5), z-depth.
// The mesh is never built on the CPU: the vertex shader turns vertex id i = v*W + u into the unprojected pixel,
// pushes the 1-pixel border to the far wall, and decides whether the vertex is an occluder (RGBA = 0) by testing
// the six grid faces around it with ex4d's stretched-face rule (smallest interior angle < 2.5 deg). Faces are
// drawn in ex4d's order and winding; the fragment shader writes the hit's z-depth (so the depth test keeps the
// nearest hit, as ex4d's rasteriser) and marks the pixel seen when the interpolated alpha exceeds 125/255.
'use strict';

(function () {
  // Shared by the occluder pass and the mesh: the source depth as vertex positions (ex4d.mesh.build).
  const GRID_GLSL = `
#ifdef LOG16
uniform highp usampler2D uDepth;
#else
uniform highp sampler2D uDepth;
#endif
uniform ivec2 uSize;          // source W, H
uniform vec4 uSrcK;           // fx, fy, cx, cy of the source camera
uniform vec2 uLogLoStep;      // log16: z = exp(lo + q * step)
uniform float uOffset, uBorder;

float depthAt(ivec2 p) {
  if (p.x <= 0 || p.y <= 0 || p.x >= uSize.x - 1 || p.y >= uSize.y - 1) return uBorder;
#ifdef LOG16
  return exp(uLogLoStep.x + float(texelFetch(uDepth, p, 0).r) * uLogLoStep.y);
#else
  return texelFetch(uDepth, p, 0).r;
#endif
}
vec3 pointAt(ivec2 p) {
  float z = depthAt(p);
  return vec3((float(p.x) + uOffset - uSrcK.z) / uSrcK.x * z, (float(p.y) + uOffset - uSrcK.w) / uSrcK.y * z, z);
}`;

  // Occluder pass, once per new frame: one fragment per vertex of the grid (texel (u, v) = vertex v*W + u).
  const OCC_VS = `#version 300 es
void main() { gl_Position = vec4(gl_VertexID == 1 ? 3.0 : -1.0, gl_VertexID == 2 ? 3.0 : -1.0, 0.0, 1.0); }`;
  const OCC_FS = `#version 300 es
precision highp float; precision highp int;
${GRID_GLSL}
uniform float uCosLimit;
out vec4 outOcc;
// ex4d.mesh.filters: an angle is below the threshold iff a.b > cos(threshold) (|a||b| + 1e-12)
bool sharp(vec3 a, vec3 b) { return dot(a, b) > uCosLimit * (length(a) * length(b) + 1e-12); }
bool stretched(vec3 a, vec3 b, vec3 c) { return sharp(b - a, c - a) || sharp(a - b, c - b) || sharp(a - c, b - c); }
void main() {
  int W = uSize.x, H = uSize.y;
  ivec2 p = ivec2(gl_FragCoord.xy);
  vec3 P = pointAt(p);
  bool left = p.x > 0, right = p.x < W - 1, up = p.y > 0, down = p.y < H - 1;
  // the six faces around vertex p (blocks: TL, TR, BL, BR; faces (BL, TL, TR) and (BL, TR, BR))
  bool occ = (!left || !right) && (!up || !down);  // image corners: the caps' vertices, always occluders
  vec3 L = pointAt(p + ivec2(-1, 0)), R = pointAt(p + ivec2(1, 0));
  vec3 U = pointAt(p + ivec2(0, -1)), D = pointAt(p + ivec2(0, 1));
  vec3 UR = pointAt(p + ivec2(1, -1)), DL = pointAt(p + ivec2(-1, 1));
  if (right && down) occ = occ || stretched(D, P, R);                           // TL of block (v, u): first
  if (left && down) occ = occ || stretched(DL, L, P) || stretched(DL, P, D);    // TR of block (v, u-1)
  if (right && up) occ = occ || stretched(P, U, UR) || stretched(P, UR, R);     // BL of block (v-1, u)
  if (left && up) occ = occ || stretched(L, U, P);                              // BR of block (v-1, u-1): second
  outOcc = vec4(occ ? 1.0 : 0.0);
}`;

  // A camera-space point c (OpenCV axes) to clip space, shared by the mesh and the path lines.
  const PROJECT_GLSL = `
uniform mat4 uW2C;
uniform vec4 uDstK;           // fx, fy, cx, cy of the view camera
uniform vec2 uDstSize;        // view W, H
uniform float uNear, uFar;
uniform bool uUseProj;
uniform mat4 uProj;
// OpenCV pinhole -> clip space: pixel (u, v) from the top-left; near/far clip as ex4d's rasteriser
vec4 project(vec3 c) {
  return uUseProj ? uProj * vec4(c.x, -c.y, -c.z, 1.0)  // a GL projection (WebXR): OpenCV -> GL eye axes
      : vec4(2.0 * (uDstK.x * c.x + uDstK.z * c.z) / uDstSize.x - c.z,
             c.z - 2.0 * (uDstK.y * c.y + uDstK.w * c.z) / uDstSize.y,
             (c.z * (uFar + uNear) - 2.0 * uFar * uNear) / (uFar - uNear), c.z);
}`;

  const MESH_VS = `#version 300 es
precision highp float; precision highp int;
${GRID_GLSL}
uniform highp sampler2D uColor;
uniform highp sampler2D uOcc;
${PROJECT_GLSL}
out vec4 vRGBA;
out float vZ;
void main() {
  ivec2 p = ivec2(gl_VertexID % uSize.x, gl_VertexID / uSize.x);
  vec3 P = pointAt(p);
  // an occluder vertex is transparent black (RGBA = 0), as in ex4d's DW-Mesh
  vRGBA = texelFetch(uOcc, p, 0).r > 0.5 ? vec4(0.0) : vec4(texelFetch(uColor, p, 0).rgb, 1.0);
  vec3 c = (uW2C * vec4(P, 1.0)).xyz;
  vZ = c.z;
  gl_Position = project(c);
}`;

  const MESH_FS = `#version 300 es
precision highp float;
uniform float uAlphaThreshold, uFar;
in vec4 vRGBA;
in float vZ;
out vec4 outColor;
void main() {
  gl_FragDepth = vZ / uFar;  // linear z-depth: the nearest hit wins, as in ex4d (occluders included)
  outColor = vRGBA.a > uAlphaThreshold ? vec4(vRGBA.rgb, 1.0) : vec4(0.0);
}`;

  const LINE_VS = `#version 300 es
precision highp float;
in vec3 aPos;
${PROJECT_GLSL}
out float vZ;
void main() {
  vec3 c = (uW2C * vec4(aPos, 1.0)).xyz;
  vZ = c.z;
  gl_Position = project(c);
}`;

  const LINE_FS = `#version 300 es
precision highp float;
uniform vec4 uColor;
uniform float uFar;
in float vZ;
out vec4 outColor;
void main() { gl_FragDepth = vZ / uFar; outColor = vec4(uColor.rgb * uColor.a, uColor.a); }`;

  const PATH_COLORS = [[1.0, 0.8, 0.2], [0.3, 0.8, 1.0], [0.6, 1.0, 0.4], [1.0, 0.5, 0.8], [0.8, 0.6, 1.0]];
  const FLIGHT_COLOR = [1.0, 0.25, 0.25];
  const AHEAD_CHUNKS = 3;

  // ---------- small 3-vector / matrix helpers (row-major 4x4 as arrays of rows) ----------
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const add = (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
  const scale = (a, s) => [a[0] * s, a[1] * s, a[2] * s];
  const norm = (a) => Math.hypot(a[0], a[1], a[2]);
  const unit = (a) => scale(a, 1 / norm(a));
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const col = (R, j) => [R[0][j], R[1][j], R[2][j]];
  function rotAxis(axis, angle) {  // Rodrigues: rotation matrix (rows) about a unit axis
    const [x, y, z] = unit(axis), c = Math.cos(angle), s = Math.sin(angle), t = 1 - c;
    return [[t * x * x + c, t * x * y - s * z, t * x * z + s * y],
            [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
            [t * x * z - s * y, t * y * z + s * x, t * z * z + c]];
  }
  const mul3 = (A, B) => A.map((r) => [0, 1, 2].map((j) => r[0] * B[0][j] + r[1] * B[1][j] + r[2] * B[2][j]));
  const apply3 = (A, v) => A.map((r) => r[0] * v[0] + r[1] * v[1] + r[2] * v[2]);
  function w2cOf(R, eye) {  // R: camera-to-world rotation (columns = camera axes in the world)
    const rows = [col(R, 0), col(R, 1), col(R, 2)];
    return rows.map((r) => [r[0], r[1], r[2], -(r[0] * eye[0] + r[1] * eye[1] + r[2] * eye[2])]).concat([[0, 0, 0, 1]]);
  }
  function fromW2C(w2c) {  // -> {R (c2w rotation), eye}
    const R = [0, 1, 2].map((i) => [w2c[0][i], w2c[1][i], w2c[2][i]]);
    const t = [w2c[0][3], w2c[1][3], w2c[2][3]];
    return { R, eye: scale(apply3(R, t), -1) };
  }
  const glMat = (m) => new Float32Array([0, 1, 2, 3].flatMap((j) => [m[0][j], m[1][j], m[2][j], m[3][j]]));
  const fmt = (x) => (Math.round(x * 10) / 10).toFixed(1);

  // ---------- state ----------
  const el = (id) => document.getElementById(id);
  const canvas = el('gl');
  const gl = canvas.getContext('webgl2', { antialias: false, premultipliedAlpha: true, preserveDrawingBuffer: true,
                                           depth: true, alpha: true });
  const S = {
    info: null, frame: 0, shownFrame: -1, playing: false, clock: 0, lastTime: 0,
    chunks: new Map(), outputs: new Map(), // chunk index -> {promise, data}
    cam: null,          // {R, eye, dist, zoom}
    fixed: null,        // {w2c, K, width, height} set through the API: exact ex4d camera
    overlays: true, pathIndex: 0, follow: false, showFill: true, showTint: false,
    paths: [], flight: new Map(), keyframes: [], recording: false,
    stats: { drawn: 0, stalls: 0, times: [] },
  };

  function status(text) { el('status').textContent = text; }

  function compile(type, src, defines) {
    const sh = gl.createShader(type);
    gl.shaderSource(sh, src.replace('\n', '\n' + (defines || '')));
    gl.compileShader(sh);
    if (!gl.getShaderParameter(sh, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(sh));
    return sh;
  }
  function program(vs, fs, defines) {
    const p = gl.createProgram();
    gl.attachShader(p, compile(gl.VERTEX_SHADER, vs, defines));
    gl.attachShader(p, compile(gl.FRAGMENT_SHADER, fs, defines));
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
    const u = {};
    const n = gl.getProgramParameter(p, gl.ACTIVE_UNIFORMS);
    for (let i = 0; i < n; i++) { const name = gl.getActiveUniform(p, i).name; u[name] = gl.getUniformLocation(p, name); }
    return { p, u };
  }

  let meshProg, occProg, lineProg, indexBuf, indexCount, emptyVao, lineVao, lineBuf, colorTex, depthTex, occTex, occFbo;

  function setupGL(info) {
    const W = info.width, H = info.height;
    const defines = info.encoding === 'log16' ? '#define LOG16\n' : '';
    meshProg = program(MESH_VS, MESH_FS, defines);
    occProg = program(OCC_VS, OCC_FS, defines);
    lineProg = program(LINE_VS, LINE_FS);
    // ex4d.mesh.build.grid_faces: all (BL, TL, TR), then all (BL, TR, BR), then the two caps
    const blocks = (H - 1) * (W - 1);
    const idx = new Uint32Array(blocks * 6 + 6);
    let k = 0;
    for (let pass = 0; pass < 2; pass++) {
      for (let v = 0; v < H - 1; v++) {
        for (let u = 0; u < W - 1; u++) {
          const tl = v * W + u, tr = tl + 1, bl = tl + W, br = bl + 1;
          if (pass === 0) { idx[k++] = bl; idx[k++] = tl; idx[k++] = tr; } else { idx[k++] = bl; idx[k++] = tr; idx[k++] = br; }
        }
      }
    }
    const cTL = 0, cTR = W - 1, cBL = (H - 1) * W, cBR = H * W - 1;
    idx.set([cTR, cTL, cBR, cBR, cTL, cBL], k);
    indexCount = idx.length;
    emptyVao = gl.createVertexArray();
    gl.bindVertexArray(emptyVao);
    indexBuf = gl.createBuffer();
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, indexBuf);
    gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, idx, gl.STATIC_DRAW);
    gl.bindVertexArray(null);
    lineVao = gl.createVertexArray();
    gl.bindVertexArray(lineVao);
    lineBuf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, lineBuf);
    const loc = gl.getAttribLocation(lineProg.p, 'aPos');
    gl.enableVertexAttribArray(loc);
    gl.vertexAttribPointer(loc, 3, gl.FLOAT, false, 0, 0);
    gl.bindVertexArray(null);

    colorTex = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, colorTex);
    gl.texStorage2D(gl.TEXTURE_2D, 1, gl.RGBA8, W, H);
    depthTex = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, depthTex);
    gl.texStorage2D(gl.TEXTURE_2D, 1, info.encoding === 'log16' ? gl.R16UI : gl.R32F, W, H);
    occTex = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, occTex);
    gl.texStorage2D(gl.TEXTURE_2D, 1, gl.R8, W, H);
    occFbo = gl.createFramebuffer();
    gl.bindFramebuffer(gl.FRAMEBUFFER, occFbo);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, occTex, 0);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    for (const t of [colorTex, depthTex, occTex]) {
      gl.bindTexture(gl.TEXTURE_2D, t);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    }
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
  }

  // ---------- streaming ----------
  function parseChunk(buf, withDepth) {
    const magic = new TextDecoder().decode(new Uint8Array(buf, 0, 8));
    if (magic !== 'EX4DVIEW') throw new Error('bad chunk');
    const len = new DataView(buf).getUint32(8, true);
    const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 12, len)));
    const n = head.width * head.height;
    let off = 12 + len;
    const frames = [];
    for (let i = 0; i < head.count; i++) frames.push({ rgba: new Uint8Array(buf, off + i * n * 4, n * 4) });
    off += head.count * n * 4;
    if (withDepth) {
      for (let i = 0; i < head.count; i++) {
        const f = frames[i];
        f.depth = head.encoding === 'log16' ? new Uint16Array(buf, off + i * n * 2, n) : new Float32Array(buf, off + i * n * 4, n);
        f.lo = head.lo[i]; f.step = head.step[i];
      }
    }
    return { head, frames };
  }

  function fetchChunk(map, ci, url, withDepth) {
    let entry = map.get(ci);
    if (!entry) {
      entry = { data: null };
      entry.promise = fetch(url).then((r) => {
        if (!r.ok) throw new Error(`${url}: ${r.status}`);
        return r.arrayBuffer();
      }).then((buf) => { entry.data = parseChunk(buf, withDepth); return entry.data; })
        .catch((e) => { map.delete(ci); status(String(e)); throw e; });
      map.set(ci, entry);
    }
    return entry.promise;
  }
  const chunkOf = (t) => Math.floor(t / S.info.chunk);
  function geometry(t) {
    const c = S.info.chunk, ci = chunkOf(t);
    return fetchChunk(S.chunks, ci, `/api/chunk?start=${ci * c}&count=${c}`, true);
  }
  function outputPath() { const p = S.paths[S.pathIndex]; return p && p.output && !p.loaded ? p : null; }
  function outputChunk(t) {
    const p = outputPath();
    if (!p) return null;
    const c = S.info.chunk, ci = chunkOf(t);
    let map = S.outputs.get(p.name);
    if (!map) { map = new Map(); S.outputs.set(p.name, map); }
    return fetchChunk(map, ci, `/api/output?name=${encodeURIComponent(p.name)}&start=${ci * c}&count=${c}`, false);
  }
  function frameData(map, t) {
    const e = map && map.get(chunkOf(t));
    return e && e.data ? e.data.frames[t - e.data.head.start] : null;
  }
  // Keep the chunks around the playhead (one behind, AHEAD_CHUNKS ahead, wrapping); drop the rest.
  function prefetch() {
    const nChunks = Math.ceil(S.info.frames / S.info.chunk), cur = chunkOf(S.frame);
    const keep = new Set();
    for (let d = -1; d <= AHEAD_CHUNKS; d++) keep.add(((cur + d) % nChunks + nChunks) % nChunks);
    for (const ci of keep) {
      geometry(Math.min(ci * S.info.chunk, S.info.frames - 1)).catch(() => {});
      const o = outputChunk(Math.min(ci * S.info.chunk, S.info.frames - 1));
      if (o) o.catch(() => {});
    }
    for (const map of [S.chunks, ...S.outputs.values()]) for (const ci of [...map.keys()]) if (!keep.has(ci)) map.delete(ci);
  }
  function uploadFrame(t) {
    const f = frameData(S.chunks, t);
    if (!f) return false;
    const W = S.info.width, H = S.info.height;
    gl.bindTexture(gl.TEXTURE_2D, colorTex);
    gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, W, H, gl.RGBA, gl.UNSIGNED_BYTE, f.rgba);
    gl.bindTexture(gl.TEXTURE_2D, depthTex);
    if (S.info.encoding === 'log16') gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, W, H, gl.RED_INTEGER, gl.UNSIGNED_SHORT, f.depth);
    else gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, W, H, gl.RED, gl.FLOAT, f.depth);
    S.shown = { lo: f.lo, step: f.step };
    S.shownFrame = t;
    occluderPass();
    return true;
  }
  function gridUniforms(prog) {
    const info = S.info, K = srcK(S.shownFrame);
    gl.activeTexture(gl.TEXTURE1); gl.bindTexture(gl.TEXTURE_2D, depthTex);
    gl.uniform1i(prog.u.uDepth, 1);
    gl.uniform2i(prog.u.uSize, info.width, info.height);
    gl.uniform4f(prog.u.uSrcK, K[0][0], K[1][1], K[0][2], K[1][2]);
    gl.uniform2f(prog.u.uLogLoStep, S.shown.lo, S.shown.step);
    gl.uniform1f(prog.u.uOffset, info.pixel_offset);
    gl.uniform1f(prog.u.uBorder, info.border_depth);
  }
  // Which vertices are occluders (RGBA = 0): once per frame, into occTex.
  function occluderPass() {
    gl.bindFramebuffer(gl.FRAMEBUFFER, occFbo);
    gl.viewport(0, 0, S.info.width, S.info.height);
    gl.disable(gl.DEPTH_TEST);
    gl.disable(gl.BLEND);
    gl.useProgram(occProg.p);
    gridUniforms(occProg);
    gl.uniform1f(occProg.u.uCosLimit, Math.fround(Math.cos(S.info.min_angle_deg * Math.PI / 180)));
    gl.bindVertexArray(emptyVao);  // no attributes: the triangle comes from gl_VertexID
    gl.drawArrays(gl.TRIANGLES, 0, 3);
    gl.bindVertexArray(null);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
  }

  // ---------- cameras ----------
  function sourceCamera() {
    S.cam = { R: [[1, 0, 0], [0, 1, 0], [0, 0, 1]], eye: [0, 0, 0], dist: S.info.radius, zoom: 1 };
  }
  const target = () => add(S.cam.eye, scale(col(S.cam.R, 2), S.cam.dist));
  function srcK(t) { return S.info.K[t]; }
  // The camera the view is drawn from: {w2c, K (3x3), width, height}.
  function viewCamera() {
    if (S.fixed) return S.fixed;
    const p = S.paths[S.pathIndex];
    if (S.follow && p) {
      const W = S.info.width, H = S.info.height;
      return { w2c: p.w2c[S.frame], K: p.K ? p.K[S.frame] : srcK(S.frame), width: W, height: H };
    }
    const rect = canvas.getBoundingClientRect(), dpr = Math.min(window.devicePixelRatio || 1, 2);
    const width = Math.max(16, Math.round(rect.width * dpr)), height = Math.max(16, Math.round(rect.height * dpr));
    const K0 = srcK(S.frame), W = S.info.width, H = S.info.height, z = S.cam.zoom;
    // The working camera (what a recording keeps: the source K with its focal times the zoom, at W×H) scaled by s
    // into the middle of the view, so the dashed frame shows exactly what an exported path renders.
    const s = Math.min(width / W, height / H);
    const K = [[K0[0][0] * z * s, 0, width / 2 + (K0[0][2] - W / 2) * s],
               [0, K0[1][1] * z * s, height / 2 + (K0[1][2] - H / 2) * s], [0, 0, 1]];
    return { w2c: w2cOf(S.cam.R, S.cam.eye), K, width, height, frame: { s, dpr } };
  }
  // What a recorded frame stores: the w2c and intrinsics at the working size (what ex4d run renders at).
  function workingCamera() {
    const v = viewCamera(), W = S.info.width, H = S.info.height;
    if (v === S.fixed || S.follow) {
      const sx = W / v.width, sy = H / v.height;
      return { w2c: v.w2c, K: [[v.K[0][0] * sx, 0, v.K[0][2] * sx], [0, v.K[1][1] * sy, v.K[1][2] * sy], [0, 0, 1]] };
    }
    const K0 = srcK(S.frame), z = S.cam.zoom;
    return { w2c: v.w2c, K: [[K0[0][0] * z, 0, K0[0][2]], [0, K0[1][1] * z, K0[1][2]], [0, 0, 1]] };
  }

  // ---------- drawing ----------
  // v: {w2c (4x4 rows, OpenCV), and K (3x3 pixels) with width/height, or proj (a GL projection, column-major 16)}
  function setCameraUniforms(prog, v) {
    gl.uniformMatrix4fv(prog.u.uW2C, false, glMat(v.w2c));
    gl.uniform1i(prog.u.uUseProj, v.proj ? 1 : 0);
    gl.uniformMatrix4fv(prog.u.uProj, false, v.proj || new Float32Array(16));
    if (v.proj) return;
    gl.uniform4f(prog.u.uDstK, v.K[0][0], v.K[1][1], v.K[0][2], v.K[1][2]);
    gl.uniform2f(prog.u.uDstSize, v.width, v.height);
    gl.uniform1f(prog.u.uNear, S.info.near);
    gl.uniform1f(prog.u.uFar, S.info.far);
  }
  function drawMesh(v) {
    gl.useProgram(meshProg.p);
    gridUniforms(meshProg);
    gl.activeTexture(gl.TEXTURE0); gl.bindTexture(gl.TEXTURE_2D, colorTex);
    gl.activeTexture(gl.TEXTURE2); gl.bindTexture(gl.TEXTURE_2D, occTex);
    gl.uniform1i(meshProg.u.uColor, 0);
    gl.uniform1i(meshProg.u.uOcc, 2);
    gl.uniform1f(meshProg.u.uAlphaThreshold, S.info.alpha_threshold);
    setCameraUniforms(meshProg, v);
    gl.bindVertexArray(emptyVao);
    gl.drawElements(gl.TRIANGLES, indexCount, gl.UNSIGNED_INT, 0);
    gl.bindVertexArray(null);
  }
  function centres(w2cs) { return w2cs.map((m) => fromW2C(m).eye); }
  function frustumLines(w2c, K, W, H, depth) {  // 8 segments: apex to the 4 image corners, and the rectangle
    const { R, eye } = fromW2C(w2c);
    const corners = [[0, 0], [W, 0], [W, H], [0, H]].map(([u, v]) => {
      const d = [(u - K[0][2]) / K[0][0] * depth, (v - K[1][2]) / K[1][1] * depth, depth];
      return add(eye, apply3(R, d));
    });
    const out = [];
    for (let i = 0; i < 4; i++) out.push(eye, corners[i], corners[i], corners[(i + 1) % 4]);
    return out;
  }
  function drawLines(v, points, color, mode) {
    if (points.length < 2) return;
    gl.useProgram(lineProg.p);
    setCameraUniforms(lineProg, v);
    gl.uniform4f(lineProg.u.uColor, color[0], color[1], color[2], 1.0);
    gl.bindVertexArray(lineVao);
    gl.bindBuffer(gl.ARRAY_BUFFER, lineBuf);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array(points.flat()), gl.STREAM_DRAW);
    gl.drawArrays(mode, 0, points.length);
    gl.bindVertexArray(null);
  }
  function drawOverlays(v) {
    const W = S.info.width, H = S.info.height, size = 0.25 * S.info.radius;
    S.paths.forEach((p, i) => {
      if (S.follow && i === S.pathIndex) return;
      const color = PATH_COLORS[i % PATH_COLORS.length];
      drawLines(v, centres(p.w2c), color, gl.LINE_STRIP);
      if (i === S.pathIndex) drawLines(v, frustumLines(p.w2c[S.frame], p.K ? p.K[S.frame] : srcK(S.frame), W, H, size), color, gl.LINES);
    });
    const flight = [...S.flight.keys()].sort((a, b) => a - b).map((t) => S.flight.get(t).w2c);
    drawLines(v, centres(flight), FLIGHT_COLOR, gl.LINE_STRIP);
    for (const k of S.keyframes) drawLines(v, frustumLines(k.w2c, k.K, W, H, 0.6 * size), FLIGHT_COLOR, gl.LINES);
  }
  function clearTarget(alpha) {
    gl.enable(gl.DEPTH_TEST);
    gl.depthFunc(gl.LESS);
    gl.disable(gl.CULL_FACE);  // ex4d's rasteriser draws both sides
    gl.disable(gl.BLEND);
    gl.clearColor(0, 0, 0, alpha);
    gl.clearDepth(1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
  }
  function drawScene(v, withOverlays) {
    if (S.shownFrame >= 0) drawMesh(v);
    if (withOverlays && S.overlays) drawOverlays(v);
    S.stats.drawn++;
  }
  function render(withOverlays, v = viewCamera()) {
    if (canvas.width !== v.width || canvas.height !== v.height) { canvas.width = v.width; canvas.height = v.height; }
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    gl.viewport(0, 0, v.width, v.height);
    clearTarget(0);
    drawScene(v, withOverlays);
    return v;
  }
  function drawOutput() {
    const p = outputPath(), panel = el('output_panel'), under = el('under');
    const f = p ? frameData(S.outputs.get(p.name), S.frame) : null;
    panel.hidden = !p;
    const followFill = S.follow && S.showFill && f && !S.fixed;
    under.hidden = !followFill;
    if (!f) return;
    const e = S.outputs.get(p.name).get(chunkOf(S.frame)).data.head;
    const img = new ImageData(new Uint8ClampedArray(f.rgba.buffer, f.rgba.byteOffset, f.rgba.length), e.width, e.height);
    for (const c of followFill ? [panel, under] : [panel]) {
      if (c.width !== e.width || c.height !== e.height) { c.width = e.width; c.height = e.height; }
      c.getContext('2d').putImageData(img, 0, 0);
    }
    if (followFill && S.showTint) {  // only the holes show it: the geometry's canvas covers the seen pixels
      const ctx = under.getContext('2d');
      ctx.fillStyle = 'rgba(255, 0, 200, 0.35)';
      ctx.fillRect(0, 0, under.width, under.height);
    }
  }

  // ---------- the loop: playback never waits on geometry (the last frame stays up until its chunk lands) ----------
  function advance(now) {
    const dt = S.lastTime ? (now - S.lastTime) / 1000 : 0;
    S.lastTime = now;
    if (S.playing) {
      S.clock = (S.clock + dt * S.info.fps) % S.info.frames;
      const t = Math.floor(S.clock);
      if (t !== S.frame) { S.frame = t; prefetch(); }
    }
    if (S.frame !== S.shownFrame && !uploadFrame(S.frame) && S.playing) S.stats.stalls++;
  }
  function tick(now) {
    if (S.xr) return;  // the XR session's loop draws while it lasts
    advance(now);
    if (S.recording && S.shownFrame === S.frame) S.flight.set(S.frame, workingCamera());
    const v = render(true);
    drawOutput();
    showFrame(v);
    S.stats.times.push(now);
    while (S.stats.times.length && S.stats.times[0] < now - 1000) S.stats.times.shift();
    updateLabels();
    requestAnimationFrame(tick);
  }
  function showFrame(v) {  // the working frame's outline in the free view
    const box = el('frame');
    box.hidden = !v.frame;
    if (!v.frame) return;
    const { s, dpr } = v.frame, w = S.info.width * s / dpr, h = S.info.height * s / dpr;
    const style = `left:${(v.width / dpr - w) / 2}px;top:${(v.height / dpr - h) / 2}px;width:${w}px;height:${h}px`;
    if (box.getAttribute('style') !== style) box.setAttribute('style', style);
  }
  function updateLabels() {
    el('frame_label').textContent = `${S.frame} / ${S.info.frames - 1}`;
    el('scrub').value = S.frame;
    el('fps').textContent = `${S.stats.times.length} fps`;
    el('play').textContent = S.playing ? '❚❚ pause' : '▶ play';
    el('record').classList.toggle('on', S.recording);
    const n = S.flight.size, ks = S.keyframes.length;
    const span = n ? `frames ${Math.min(...S.flight.keys())}–${Math.max(...S.flight.keys())}` : '';
    el('flight_label').textContent = (n ? `flight: ${n} cameras, ${span}` : 'no flight recorded') + (ks ? `; ${ks} keyframes` : '');
  }

  // ---------- WebXR (headsets): both eyes drawn from the same geometry ----------
  // XR's reference space starts at the free camera of the moment the session begins, with GL axes (y up, -z
  // forward): eye-from-world in ex4d's axes = F · V · F · w2c_start, F = diag(1, -1, -1, 1), V = XR's view matrix.
  function xrEyeW2C(viewMatrix, start) {  // viewMatrix: column-major 16 (XRRigidTransform.inverse.matrix)
    const F = [1, -1, -1, 1], out = [];
    const V = [0, 1, 2, 3].map((i) => [0, 1, 2, 3].map((j) => F[i] * viewMatrix[j * 4 + i] * F[j]));
    for (let i = 0; i < 4; i++) out.push([0, 1, 2, 3].map((j) => V[i][0] * start[0][j] + V[i][1] * start[1][j] + V[i][2] * start[2][j] + V[i][3] * start[3][j]));
    return out;
  }
  async function enterXR() {
    const session = await navigator.xr.requestSession('immersive-vr');
    await gl.makeXRCompatible();
    session.updateRenderState({ baseLayer: new XRWebGLLayer(session, gl), depthNear: S.info.near, depthFar: S.info.far });
    const space = await session.requestReferenceSpace('local');
    S.xr = { session, space, start: w2cOf(S.cam.R, S.cam.eye) };
    session.addEventListener('end', () => { S.xr = null; S.lastTime = 0; requestAnimationFrame(tick); });
    session.requestAnimationFrame(xrFrame);
  }
  function xrFrame(now, frame) {
    const { session, space, start } = S.xr;
    session.requestAnimationFrame(xrFrame);
    advance(now);
    const pose = frame.getViewerPose(space), layer = session.renderState.baseLayer;
    if (!pose) return;
    gl.bindFramebuffer(gl.FRAMEBUFFER, layer.framebuffer);
    clearTarget(1);
    for (const view of pose.views) {
      const vp = layer.getViewport(view);
      gl.viewport(vp.x, vp.y, vp.width, vp.height);
      drawScene({ w2c: xrEyeW2C(view.transform.inverse.matrix, start), proj: view.projectionMatrix }, true);
    }
  }
  async function offerXR() {
    if (!navigator.xr || !(await navigator.xr.isSessionSupported('immersive-vr').catch(() => false))) return;
    const button = el('xr');
    button.hidden = false;
    button.onclick = () => enterXR().catch((err) => status(`VR: ${err.message || err}`));
  }

  // ---------- interaction ----------
  function orbit(dx, dy) {
    const t = target();
    const yaw = rotAxis([0, -1, 0], -dx), pitch = rotAxis(col(S.cam.R, 0), dy);
    const rot = mul3(pitch, yaw);
    S.cam.R = mul3(rot, S.cam.R);
    S.cam.eye = add(t, apply3(rot, sub(S.cam.eye, t)));
  }
  function pan(dx, dy) {
    const s = S.cam.dist * 0.0015;
    S.cam.eye = add(S.cam.eye, add(scale(col(S.cam.R, 0), -dx * s), scale(col(S.cam.R, 1), -dy * s)));
  }
  function dolly(factor) {
    const t = target();
    S.cam.dist = Math.max(1e-3, S.cam.dist * factor);
    S.cam.eye = sub(t, scale(col(S.cam.R, 2), S.cam.dist));
  }
  function fly(axis, amount) { S.cam.eye = add(S.cam.eye, scale(col(S.cam.R, axis), amount * S.cam.dist)); }
  // Moving the camera by hand leaves a fixed or path camera from where it is (the flight takes over from the path).
  function leaveFixed() {
    if (!S.fixed && !S.follow) return;
    const w = workingCamera(), { R, eye } = fromW2C(w.w2c);
    S.cam = { R, eye, dist: S.cam.dist, zoom: w.K[0][0] / srcK(S.frame)[0][0] };
    S.fixed = null;
    S.follow = false;
    el('follow').checked = false;
  }

  function bindInput() {
    let drag = null;
    const pointers = new Map();
    canvas.addEventListener('contextmenu', (e) => e.preventDefault());
    canvas.addEventListener('pointerdown', (e) => {
      canvas.setPointerCapture(e.pointerId); canvas.focus();
      pointers.set(e.pointerId, [e.clientX, e.clientY]);
      drag = { x: e.clientX, y: e.clientY, pan: e.button === 2 || e.shiftKey };
    });
    canvas.addEventListener('pointermove', (e) => {
      if (!pointers.has(e.pointerId)) return;
      const prev = pointers.get(e.pointerId);
      pointers.set(e.pointerId, [e.clientX, e.clientY]);
      leaveFixed();
      if (pointers.size === 2) {  // pinch: dolly by the change of finger distance, pan by the midpoint
        const [a, b] = [...pointers.values()], other = [...pointers.entries()].find(([id]) => id !== e.pointerId)[1];
        const before = Math.hypot(prev[0] - other[0], prev[1] - other[1]), after = Math.hypot(a[0] - b[0], a[1] - b[1]);
        if (before > 0 && after > 0) dolly(before / after);
        pan((e.clientX - prev[0]) / 2, (e.clientY - prev[1]) / 2);
        return;
      }
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      drag.x = e.clientX; drag.y = e.clientY;
      if (drag.pan) pan(dx, dy); else orbit(dx * 0.005, -dy * 0.005);
    });
    const up = (e) => { pointers.delete(e.pointerId); if (!pointers.size) drag = null; };
    canvas.addEventListener('pointerup', up);
    canvas.addEventListener('pointercancel', up);
    canvas.addEventListener('wheel', (e) => {
      e.preventDefault(); leaveFixed();
      const f = Math.exp(Math.sign(e.deltaY) * 0.1);
      if (e.ctrlKey) S.cam.zoom = Math.min(20, Math.max(0.05, S.cam.zoom / f)); else dolly(f);
    }, { passive: false });
    window.addEventListener('keydown', (e) => {
      // a focused control handles its own keys (Space on the play button plays once, arrows move the slider)
      if (['INPUT', 'SELECT', 'BUTTON', 'TEXTAREA'].includes(e.target.tagName)) return;
      const step = 0.05, k = e.key;
      const moves = { w: [2, step], s: [2, -step], d: [0, step], a: [0, -step], e: [1, step], q: [1, -step] };
      if (moves[k.toLowerCase()]) { leaveFixed(); fly(...moves[k.toLowerCase()]); }
      else if (k === 'ArrowLeft') { leaveFixed(); orbit(-0.05, 0); }
      else if (k === 'ArrowRight') { leaveFixed(); orbit(0.05, 0); }
      else if (k === 'ArrowUp') { leaveFixed(); orbit(0, 0.05); }
      else if (k === 'ArrowDown') { leaveFixed(); orbit(0, -0.05); }
      else if (k === '+' || k === '=') { leaveFixed(); S.cam.zoom *= 1.1; }
      else if (k === '-') { leaveFixed(); S.cam.zoom /= 1.1; }
      else if (k === ' ') { togglePlay(); }
      else if (k === 'Home') { leaveFixed(); sourceCamera(); }
      else if (k.toLowerCase() === 'r') { toggleRecord(); }
      else if (k.toLowerCase() === 'k') { addKeyframe(); }
      else return;
      e.preventDefault();
    });
    el('play').onclick = togglePlay;
    el('scrub').oninput = (e) => { S.playing = false; setFrameNow(+e.target.value); };
    el('path_select').onchange = (e) => { S.pathIndex = +e.target.value; prefetch(); };
    el('follow').onchange = (e) => { S.follow = e.target.checked; S.fixed = null; };
    el('show_fill').onchange = (e) => { S.showFill = e.target.checked; };
    el('show_tint').onchange = (e) => { S.showTint = e.target.checked; };
    el('show_paths').onchange = (e) => { S.overlays = e.target.checked; };
    el('record').onclick = toggleRecord;
    el('add_key').onclick = addKeyframe;
    el('clear_flight').onclick = () => { S.flight.clear(); S.keyframes = []; S.recording = false; };
    el('export_json').onclick = () => download(exportFlight('json'));
    el('export_npz').onclick = () => download(exportFlight('npz'));
    el('export_keys').onclick = () => download(exportKeyframes());
    el('load_file').onchange = async (e) => {
      const file = e.target.files[0];
      if (file) { try { await loadTrajectory(file.name, await file.arrayBuffer()); } catch (err) { status(String(err.message || err)); } }
    };
  }
  function togglePlay() { S.playing = !S.playing; S.clock = S.frame; }
  function toggleRecord() {
    S.recording = !S.recording;
    if (S.recording && !S.playing) togglePlay();
  }
  function addKeyframe() {
    const c = workingCamera();
    S.keyframes = S.keyframes.filter((k) => k.frame !== S.frame).concat([{ frame: S.frame, w2c: c.w2c, K: c.K }])
      .sort((a, b) => a.frame - b.frame);
  }
  function setFrameNow(t) { S.frame = Math.max(0, Math.min(S.info.frames - 1, t | 0)); S.clock = S.frame; prefetch(); }

  // ---------- trajectory files (written and read by ex4d's own code on the server) ----------
  // A flight covers every frame: frames before its first / after its last recorded camera hold that camera
  // (as ex4d's keyframe files do), and frames skipped while playing hold the previous one.
  function flightCameras() {
    if (!S.flight.size) throw new Error('record a flight first');
    const times = [...S.flight.keys()].sort((a, b) => a - b), out = [];
    for (let t = 0, j = 0; t < S.info.frames; t++) {
      while (j + 1 < times.length && times[j + 1] <= t) j++;
      out.push(S.flight.get(times[j]));
    }
    return out;
  }
  async function postExport(body, format) {
    const r = await fetch(`/api/trajectory/export?format=${format}`, { method: 'POST', body: JSON.stringify(body) });
    if (!r.ok) throw new Error((await r.json()).error);
    const name = /filename="([^"]+)"/.exec(r.headers.get('Content-Disposition'))[1];
    return { name, bytes: new Uint8Array(await r.arrayBuffer()) };
  }
  function exportFlight(format) {
    const cams = flightCameras();
    const body = { w2c: cams.map((c) => c.w2c), K: cams.map((c) => c.K) };
    return postExport(body, format);
  }
  function exportKeyframes() {
    if (!S.keyframes.length) return Promise.reject(new Error('add keyframes first'));
    return postExport({ keyframes: S.keyframes.map((k) => ({ frame: k.frame, w2c: k.w2c })) }, 'json');
  }
  async function download(promise) {
    try {
      const { name, bytes } = await promise;
      const a = document.createElement('a');
      a.href = URL.createObjectURL(new Blob([bytes])); a.download = name; a.click();
      status(`exported ${name}`);
    } catch (err) { status(String(err.message || err)); }
  }
  async function loadTrajectory(name, bytes) {
    const r = await fetch(`/api/trajectory/load?name=${encodeURIComponent(name)}`, { method: 'POST', body: bytes });
    const doc = await r.json();
    if (!r.ok) throw new Error(doc.error);
    addPath({ name: doc.name, w2c: doc.w2c, K: doc.K, output: false, loaded: true });
    S.pathIndex = S.paths.length - 1;
    el('path_select').value = S.pathIndex;
    status(`loaded ${name}`);
    return doc;
  }
  function addPath(p) {
    S.paths.push(p);
    const o = document.createElement('option');
    o.value = S.paths.length - 1; o.textContent = p.name + (p.output ? ' (with output video)' : '');
    el('path_select').appendChild(o);
  }

  // ---------- the page's JS API (tests, benchmarks, scripting) ----------
  async function setFrame(t) {
    S.playing = false;
    setFrameNow(t);
    await geometry(S.frame);
    const o = outputChunk(S.frame);
    if (o) await o;
    uploadFrame(S.frame);
  }
  function toBase64(bytes) {
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }
  const api = {
    ready: null,
    get info() { return S.info; },
    setFrame,
    // An exact ex4d camera: w2c (4x4 rows, OpenCV), K (3x3) and the image size; the canvas takes that size.
    setCamera(w2c, K, width, height) { S.fixed = { w2c, K, width, height }; },
    freeCamera() { S.fixed = null; },
    getCamera() { return { view: viewCamera(), working: workingCamera(), frame: S.frame }; },
    setOverlays(on) { S.overlays = !!on; el('show_paths').checked = S.overlays; },
    selectPath(i, follow) { S.pathIndex = i; S.follow = !!follow; el('follow').checked = S.follow; el('path_select').value = i; prefetch(); },
    play() { if (!S.playing) togglePlay(); },
    pause() { S.playing = false; },
    orbit, pan, dolly, fly,
    // Draw now and read the canvas back: {width, height, rgba (base64, rows top-down)}; alpha 255 = seen.
    snapshot(withOverlays = false, view = undefined) {
      const v = view || render(withOverlays);
      const px = new Uint8Array(v.width * v.height * 4);
      gl.readPixels(0, 0, v.width, v.height, gl.RGBA, gl.UNSIGNED_BYTE, px);
      const flipped = new Uint8Array(px.length), row = v.width * 4;
      for (let y = 0; y < v.height; y++) flipped.set(px.subarray((v.height - 1 - y) * row, (v.height - y) * row), y * row);
      return { width: v.width, height: v.height, rgba: toBase64(flipped) };
    },
    // The output video as shown under the holes in "view from the path" mode: {width, height, rgba} or null.
    outputSnapshot() {
      drawOutput();
      const under = el('under');
      if (under.hidden) return null;
      const tint = S.showTint;
      S.showTint = false;  // the output frame itself
      drawOutput();
      S.showTint = tint;
      const img = under.getContext('2d').getImageData(0, 0, under.width, under.height);
      return { width: under.width, height: under.height, rgba: toBase64(new Uint8Array(img.data.buffer)) };
    },
    startRecording() { S.recording = true; },
    stopRecording() { S.recording = false; },
    recordNow() { S.flight.set(S.frame, workingCamera()); },
    addKeyframe,
    clearFlight() { S.flight.clear(); S.keyframes = []; },
    async exportFlight(format = 'json') { const { name, bytes } = await exportFlight(format); return { name, base64: toBase64(bytes) }; },
    async exportKeyframes() { const { name, bytes } = await exportKeyframes(); return { name, base64: toBase64(bytes) }; },
    loadTrajectoryText(name, text) { return loadTrajectory(name, new TextEncoder().encode(text)); },
    // Draw n frames back to back (each waits for the GPU): ms per frame, geometry resident.
    timeDraws(n) {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) { orbit(0.002, 0); render(true); gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4)); }
      return (performance.now() - t0) / n;
    },
    // Draw through a GL projection matrix (column-major 16), as the XR mode does per eye; returns snapshot().
    snapshotProjected(w2c, proj, width, height) {
      const v = { w2c, proj: new Float32Array(proj), width, height };
      render(false, v);
      return api.snapshot(false, v);
    },
    xrEyeW2C,
    stats() { return { fps: S.stats.times.length, drawn: S.stats.drawn, stalls: S.stats.stalls, frame: S.frame, shown: S.shownFrame, chunks: S.chunks.size }; },
  };
  window.ex4dView = api;

  api.ready = (async () => {
    if (!gl) { status('WebGL2 is not available in this browser'); throw new Error('no WebGL2'); }
    const info = await (await fetch('/api/info')).json();
    S.info = info;
    el('title').textContent = `${info.title} · ${info.width}×${info.height} · ${info.frames} frames @ ${fmt(info.fps)} fps`;
    el('scrub').max = info.frames - 1;
    setupGL(info);
    sourceCamera();
    for (const p of info.paths) addPath(p);
    if (!info.paths.some((p) => p.output)) el('output_note').textContent = 'no output video in this input';
    bindInput();
    offerXR();
    await setFrame(0);
    status('ready');
    requestAnimationFrame(tick);
    return info;
  })();
})();
