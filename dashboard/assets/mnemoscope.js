/* mnemoscope dashboard: browser-side pieces.
 *
 * - clientside callbacks (window.dash_clientside.mnemoscope): scrubbing the selected
 *   timestep on Explore, play/pause, URL sync, result export, nav links;
 * - figure export (PNG/SVG buttons on every card);
 * - checkpoint upload straight from the browser to the REST API (XMLHttpRequest, so the
 *   progress of a large file can be shown; the file never passes through a callback).
 */
(function () {
  "use strict";

  var NO = function () { return window.dash_clientside.no_update; };

  // ---- figures -----------------------------------------------------------------------

  // The selected timestep is drawn as an HTML line over the graph, not as a Plotly shape:
  // any shape edit makes Plotly redraw the whole figure (~100 ms for a 128-slot heatmap),
  // moving a div costs nothing. The line follows re-renders through plotly_afterplot.
  // the selected timestep per graph id: the graph's element can be replaced (Dash swaps
  // in the real graph once its code has loaded), so nothing is kept on the element
  var cursorAt = {};

  function placeCursor(id, t, horizontal, tries) {
    cursorAt[id] = t;
    var holder = document.getElementById(id);
    var gd = holder && holder.querySelector(".js-plotly-plot");
    if (!gd || !gd.on) {
      // not plotted yet: try again shortly (the hook below takes over once it is)
      tries = tries || 0;
      if (tries < 100) {
        setTimeout(function () { if (cursorAt[id] === t) { placeCursor(id, t, horizontal, tries + 1); } }, 100);
      }
      return;
    }
    holder.setAttribute("data-t", t);
    if (!gd.__msCursor) {
      gd.__msCursor = true;
      gd.on("plotly_afterplot", function () {
        if (cursorAt[id] !== undefined) { placeCursor(id, cursorAt[id], horizontal); }
      });
    }
    var fl = gd._fullLayout;
    var lines = holder.querySelectorAll(".ms-cursor");
    if (!fl || !gd.data || !gd.data.length || !fl.xaxis) {
      lines.forEach(function (l) { l.style.display = "none"; });
      return;
    }
    var spans = [];
    Object.keys(fl).forEach(function (key) {
      var m = /^yaxis(\d*)$/.exec(key);
      if (!m || !fl[key] || !fl[key]._length) { return; }
      var ya = fl[key];
      var xa = fl["xaxis" + ((ya.anchor || "x").slice(1))] || fl.xaxis;
      if (!xa || !xa._length) { return; }
      if (horizontal) {
        spans.push({ left: xa._offset, top: ya._offset + ya.l2p(t), width: xa._length, height: 0 });
      } else {
        spans.push({ left: xa._offset + xa.l2p(t), top: ya._offset, width: 0, height: ya._length });
      }
    });
    for (var i = lines.length; i < spans.length; i++) {
      var div = document.createElement("div");
      div.className = "ms-cursor";
      holder.appendChild(div);
    }
    lines = holder.querySelectorAll(".ms-cursor");
    lines.forEach(function (line, k) {
      var sp = spans[k];
      if (!sp || !isFinite(sp.left) || !isFinite(sp.top)) { line.style.display = "none"; return; }
      line.style.display = "block";
      line.style.left = sp.left + "px";
      line.style.top = sp.top + "px";
      line.style.width = (sp.width || 2) + "px";
      line.style.height = (sp.height || 2) + "px";
    });
  }

  function placeCursors(t) {
    TIME_GRAPHS.forEach(function (id) { placeCursor(id, t, false); });
    placeCursor("explore-attention", t, true);
  }

  var TIME_GRAPHS = ["explore-strips", "explore-read", "explore-write", "explore-slots", "explore-entropy"];

  function baseLayout(title, extra) {
    return Object.assign({
      template: "plotly_white",
      font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12 },
      margin: { l: 48, r: 12, t: 34, b: 40 },
      title: { text: title, x: 0.01, font: { size: 13 } },
      height: 300,
      paper_bgcolor: "#fff",
      plot_bgcolor: "#fff",
      legend: { orientation: "h", y: -0.3, yanchor: "top", font: { size: 10 } }
    }, extra || {});
  }

  function emptyFig(text) {
    return {
      data: [],
      layout: baseLayout("", {
        height: 300,
        xaxis: { visible: false }, yaxis: { visible: false },
        annotations: [{ text: text, showarrow: false, x: 0.5, y: 0.5, xref: "paper", yref: "paper",
                        font: { color: "#666" } }]
      })
    };
  }

  function range(n) { var out = new Array(n); for (var i = 0; i < n; i++) { out[i] = i; } return out; }
  function sum(a) { var s = 0; for (var i = 0; i < a.length; i++) { s += a[i] || 0; } return s; }
  function fix(x, d) { return (x === null || x === undefined) ? "n/a" : Number(x).toFixed(d); }

  var DIVERGING = [[0, "#2166ac"], [0.25, "#92c5de"], [0.5, "#f7f7f7"], [0.75, "#f4a582"], [1, "#b2182b"]];
  var READ_COLORS = ["#1f77b4", "#17becf", "#9467bd", "#2ca02c"];
  var WRITE_COLORS = ["#d62728", "#ff7f0e", "#e377c2", "#8c564b"];

  // one path per head (a step outline over the slots), not one SVG bar per slot
  function stepArea(w, label, color) {
    return { type: "scatter", mode: "lines", x: range(w.length), y: w, name: label,
             line: { shape: "hvh", width: 1.5, color: color }, fill: "tozeroy",
             fillcolor: color + "33", hovertemplate: "slot %{x}<br>w=%{y:.4f}<extra>" + label + "</extra>" };
  }

  // "memory.read_weights head 1" -> "read_weights head 1": which head a mass is of
  function shortLabel(label) { return String(label || "").replace(/^(layers\.\d+\.)?memory\./, ""); }

  // A long trace arrives max-pooled into time bins (bundle.edges, in timesteps; null when
  // each step is its own): timestep t is drawn from the bin that holds it.
  function binOf(edges, t, t0) {
    if (!edges || edges.length < 2) { return t - (t0 || 0); }
    var k = edges[1] - edges[0];
    return Math.max(0, Math.min(edges.length - 2, Math.floor((t - edges[0]) / k)));
  }
  function stepLabel(edges, t, i) {
    if (!edges || edges.length < 2) { return "t = " + t; }
    return "t = " + t + " (max of steps " + edges[i] + "-" + (edges[i + 1] - 1) + ")";
  }

  function weightsAt(bundle, t, bin) {
    var traces = [];
    var notes = [];
    (bundle.read || []).forEach(function (s, i) {
      var w = s.w[bin] || [];
      traces.push(stepArea(w, s.label, READ_COLORS[i % READ_COLORS.length]));
      notes.push(shortLabel(s.label) + " " + fix(sum(w), 2));
    });
    (bundle.write || []).forEach(function (s, i) {
      var w = s.w[bin] || [];
      traces.push(stepArea(w, s.label, WRITE_COLORS[i % WRITE_COLORS.length]));
      notes.push(shortLabel(s.label) + " " + fix(sum(w), 2));
    });
    (bundle.slots || []).forEach(function (s) {
      var w = s.w[bin] || [];
      traces.push({ type: "scatter", mode: "lines", x: range(w.length), y: w, name: s.label,
                    line: { dash: "dot", width: 1.5 },
                    hovertemplate: "slot %{x}<br>%{y:.4f}<extra>" + s.label + "</extra>" });
    });
    if (!traces.length) { return emptyFig("no weightings over slots"); }
    return {
      data: traces,
      layout: baseLayout(stepLabel(bundle.edges, t, bin) + (notes.length ? " · mass " + notes.join(", ") : ""), {
        // the legend sits under the axis title, however many heads there are
        height: 300 + 18 * traces.length,
        margin: { l: 48, r: 12, t: 34, b: 60 + 18 * traces.length },
        legend: { orientation: "h", y: -0.2 - 0.02 * traces.length, yanchor: "top", font: { size: 10 } },
        xaxis: { title: { text: "slot" }, range: [-0.5, (bundle.slotsN || 1) - 0.5] },
        yaxis: { title: { text: "weight" }, range: [0, (bundle.wmax || 1) * 1.05] }
      })
    };
  }

  function matrixAt(bundle, matrix, t) {
    if (!bundle.matrix_site) { return emptyFig("no memory matrix for this model"); }
    if (!matrix) { return emptyFig("loading the memory matrix..."); }
    if (matrix.error) { return emptyFig(matrix.error); }
    var bin = binOf(matrix.edges, t, (bundle.window || [0])[0]);
    var m = matrix.m[bin] || [];
    var lim = matrix.absmax || 1;
    return {
      data: [{ type: "heatmap", z: m, colorscale: DIVERGING, zmin: -lim, zmax: lim,
               colorbar: { thickness: 10, len: 0.8 },
               hovertemplate: "slot %{y}, feature %{x}<br>%{z:.3f}<extra>" + matrix.label + "</extra>" }],
      layout: baseLayout(stepLabel(matrix.edges, t, bin) + " · " + matrix.label, {
        xaxis: { title: { text: "feature" } }, yaxis: { title: { text: "slot" }, autorange: "reversed" }
      })
    };
  }

  // one head: one bar chart; several: small multiples (one panel per head, up to four
  // a row, one y range), never heads stacked over each other
  function attentionAt(bundle, t, bin) {
    var kb = bundle.key_bin || 1;  // keys pooled into bins of kb steps (a reduced trace)
    var series = bundle.attention || [];
    if (!series.length) { return emptyFig("no attention sites"); }
    var n = series.length;
    var cols = n === 1 ? 1 : (n <= 4 ? 2 : 4);
    var rows = Math.ceil(n / cols);
    var gapX = 0.06, gapY = rows > 1 ? Math.min(0.12, 0.36 / rows) : 0;
    var w = (1 - gapX * (cols - 1)) / cols, h = (1 - gapY * (rows - 1)) / rows;
    var lo = 0, hi = 0;
    var rowsAt = series.map(function (s) {
      var row = (s.w[bin] || []).slice(0, Math.floor(t / kb) + 1);
      row.forEach(function (v) { if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
      return row;
    });
    var layout = baseLayout("query t = " + t + (n > 1 ? " · " + n + " heads" : " · " + series[0].label), {
      height: n === 1 ? 300 : 70 + 150 * rows, showlegend: false,
      margin: { l: 48, r: 12, t: 40, b: 40 }, annotations: []
    });
    var traces = series.map(function (s, i) {
      var r = Math.floor(i / cols), c = i % cols;
      var x0 = c * (w + gapX), top = 1 - r * (h + gapY);
      var xa = "xaxis" + (i ? i + 1 : ""), ya = "yaxis" + (i ? i + 1 : "");
      layout[xa] = { domain: [x0, x0 + w], anchor: "y" + (i ? i + 1 : ""), tickfont: { size: 9 },
                     title: { text: r === rows - 1 ? "key" : "" }, range: [-0.5, Math.max(t, 0) + 0.5] };
      layout[ya] = { domain: [Math.max(0, top - h), top], anchor: "x" + (i ? i + 1 : ""), tickfont: { size: 9 },
                     range: [Math.min(0, lo * 1.05), Math.max(hi * 1.05, 0.05)], title: { text: c === 0 ? "weight" : "" } };
      if (n > 1) {
        layout.annotations.push({ text: s.head !== null && s.head !== undefined ? "head " + s.head : s.label,
                                  x: x0 + w / 2, y: top, xref: "paper", yref: "paper", xanchor: "center",
                                  yanchor: "bottom", showarrow: false, font: { size: 10 } });
      }
      return { type: "bar", x: range(rowsAt[i].length).map(function (k) { return k * kb + (kb - 1) / 2; }),
               y: rowsAt[i], name: s.label,
               xaxis: "x" + (i ? i + 1 : ""), yaxis: "y" + (i ? i + 1 : ""),
               marker: { color: READ_COLORS[i % READ_COLORS.length] },
               hovertemplate: "key %{x}<br>%{y:.4f}<extra>" + s.label + "</extra>" };
    });
    return { data: traces, layout: layout };
  }

  // ---- clientside callbacks -------------------------------------------------------------

  // The Explore bundle arrives as one JSON string: Dash compares and copies a string in
  // no time, where a megabyte of nested arrays costs it hundreds of milliseconds. It is
  // parsed here once per trace.
  var parsed = {};
  function parseBundle(text, slot) {
    if (typeof text !== "string") { return text; }
    slot = slot || "bundle";
    if (!parsed[slot] || parsed[slot].text !== text) { parsed[slot] = { text: text, value: JSON.parse(text) }; }
    return parsed[slot].value;
  }

  // resolves with fn() after the browser has painted the current frame
  function afterPaint(fn) {
    return new Promise(function (resolve) {
      requestAnimationFrame(function () { setTimeout(function () { resolve(fn()); }, 0); });
    });
  }

  var latestWait = null;

  var ns = {
    // scrub(t, bundle, matrix) -> [weights@t, matrix@t, attention@t, label]; the cursor
    // on the whole-sequence graphs moves as a side effect (placeCursors)
    scrub: function (t, bundle, matrix) {
      bundle = parseBundle(bundle);
      matrix = parseBundle(matrix, "matrix");
      if (!bundle || !bundle.T) { return [NO(), NO(), NO(), "t = 0"]; }
      var win = bundle.window || [0, bundle.T];  // the steps drawn: all, or a zoomed window
      t = Math.max(win[0], Math.min(win[1] - 1, Math.round(t || 0)));
      var bin = binOf(bundle.edges, t, win[0]);
      var draw = function () {
        placeCursors(t);
        return [weightsAt(bundle, t, bin), matrixAt(bundle, matrix, t), attentionAt(bundle, t, bin),
                "t = " + t + " / " + (bundle.T - 1)];
      };
      // new data: let the whole-sequence heatmaps paint first; a slider move: at once
      var trig = (window.dash_clientside.callback_context.triggered || [])[0];
      return trig && trig.prop_id.indexOf("explore-t.") !== 0 ? afterPaint(draw) : draw();
    },

    // deferred({figures}) -> the figures below the fold, after the next paint
    deferred: function (data) {
      if (!data || !data.figures) { return [NO(), NO(), NO(), NO()]; }
      return afterPaint(function () { return data.figures; });
    },

    // stepTo(n_intervals, ...clickData, t, bundle): the next timestep when playing, or
    // the column that was clicked
    stepTo: function () {
      var args = Array.prototype.slice.call(arguments);
      var bundle = parseBundle(args[args.length - 1]);
      var t = args[args.length - 2] || 0;
      if (!bundle || !bundle.T) { return NO(); }
      var trig = (window.dash_clientside.callback_context.triggered || [])[0];
      if (!trig) { return NO(); }
      var win = bundle.window || [0, bundle.T];
      var width = bundle.edges ? bundle.edges[1] - bundle.edges[0] : 1;  // playing a reduced trace: bin by bin
      if (trig.prop_id.indexOf("explore-interval") === 0) { return t + width < win[1] ? t + width : win[0]; }
      var click = trig.value;
      if (click && click.points && click.points.length) {
        var x = click.points[0].x;
        if (typeof x === "number" && isFinite(x)) { return Math.max(win[0], Math.min(win[1] - 1, Math.round(x))); }
      }
      return NO();
    },

    // nextPoll(wait): POLL_MS after the last poll's answer arrived, a new tick into
    // wait.target (set_props, outside the callback graph: Dash refuses callback loops).
    // Only the newest wait key fires: a Run pressed while a tick is pending starts one
    // new chain, never two (polls that overlap are what Dash drops).
    nextPoll: function (wait) {
      if (!wait || !wait.key || !wait.target) { return ""; }
      latestWait = wait.key;
      setTimeout(function () {
        if (latestWait === wait.key) { setProps(wait.target, { data: wait.key }); }
      }, wait.ms || 400);
      return "";
    },

    togglePlay: function (n, disabled) {
      var playing = disabled === false;
      return playing ? [true, "Play"] : [false, "Pause"];
    },

    // syncUrl(...values, keys): the page's parameters into the address bar, without
    // navigating (history.replaceState is invisible to the router), so a view can be
    // shared and reloaded
    syncUrl: function () {
      var args = Array.prototype.slice.call(arguments);
      var keys = args.pop() || [];
      var params = new URLSearchParams();
      keys.forEach(function (key, i) {
        var v = args[i];
        if (v === null || v === undefined || v === "" || (Array.isArray(v) && !v.length)) { return; }
        params.set(key, Array.isArray(v) ? v.join(",") : String(v));
      });
      var qs = params.toString();
      var url = window.location.pathname + (qs ? "?" + qs : "");
      if (url !== window.location.pathname + window.location.search) {
        window.history.replaceState(window.history.state, "", url);
      }
      return "";
    },

    // uploadProgress(state) -> [bar style, label, wrapper class]
    uploadProgress: function (st) {
      if (!st) { return [{ width: "0%" }, "", "ms-progress ms-progress-idle"]; }
      var total = st.total || 0;
      var frac = st.phase === "done" ? 1 : (total ? Math.min(1, (st.loaded || 0) / total) : 0);
      var mb = function (b) { return (b / 1048576).toFixed(1) + " MB"; };
      var label = st.phase === "uploading" ? "uploading " + st.name + ": " + mb(st.loaded || 0) + " of " + mb(total) +
                  " (" + Math.round(frac * 100) + "%)"
        : st.phase === "validating" ? "checking " + st.name + " on the server..."
        : st.phase === "done" ? "uploaded " + st.name
        : "upload of " + st.name + " failed";
      var status = st.phase === "error" ? "failed" : st.phase === "done" ? "done" : "running";
      return [{ width: (frac * 100).toFixed(1) + "%" }, label, "ms-progress ms-progress-" + status];
    },

    rememberCheckpoint: function (value) {
      return value ? value : NO();
    },

    // nav links keep the chosen checkpoint
    navHrefs: function (checkpoint, bases) {
      return (bases || []).map(function (base) {
        var path = String(base || "").split("?")[0];
        if (!checkpoint || /\/dashboard\/?$/.test(path) || /\/checkpoints$/.test(path)) { return path; }
        return path + "?checkpoint=" + encodeURIComponent(checkpoint);
      });
    },

    // exportResult(clicks[], payload): download {json, csv, filename}
    exportResult: function (clicks, payload) {
      var trig = window.dash_clientside.callback_context.triggered_id;
      if (!payload || !trig || !clicks || !clicks.some(function (c) { return c; })) { return NO(); }
      var fmt = trig.fmt;
      var text = fmt === "csv" ? payload.csv : JSON.stringify(payload.json, null, 2);
      saveText(text, (payload.filename || "result") + "." + fmt,
               fmt === "csv" ? "text/csv" : "application/json");
      return fmt;
    }
  };

  window.dash_clientside = Object.assign({}, window.dash_clientside);
  window.dash_clientside.mnemoscope = ns;

  function saveText(text, filename, type) {
    var blob = new Blob([text], { type: type + ";charset=utf-8" });
    var url = URL.createObjectURL(blob);
    var a = document.createElement("a");
    a.href = url;
    a.download = filename;
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(url); a.remove(); }, 1000);
  }

  // ---- figure export: PNG and SVG buttons on every card -----------------------------------

  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest && ev.target.closest(".ms-export-fig");
    if (!btn) { return; }
    var holder = document.getElementById(btn.getAttribute("data-graph"));
    var gd = holder && (holder.classList.contains("js-plotly-plot") ? holder : holder.querySelector(".js-plotly-plot"));
    if (!gd || !window.Plotly) { return; }
    var format = btn.getAttribute("data-format") || "png";
    window.Plotly.downloadImage(gd, {
      format: format, filename: btn.getAttribute("data-filename") || "figure",
      width: gd.clientWidth || 1000, height: gd.clientHeight || 600, scale: format === "png" ? 2 : 1
    });
  });

  // ---- upload: drag and drop, straight to the REST API -----------------------------------

  function setProps(id, props) {
    if (window.dash_clientside && window.dash_clientside.set_props) {
      window.dash_clientside.set_props(id, props);
    }
  }

  function uploadFile(zone, file) {
    var api = zone.getAttribute("data-api") || "/api";
    var tokenInput = document.getElementById("token-input");
    var token = tokenInput && tokenInput.value ? tokenInput.value.trim() : "";
    var form = new FormData();
    form.append("file", file, file.name);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", api.replace(/\/$/, "") + "/checkpoints");
    xhr.setRequestHeader("Accept", "application/json");
    if (token) { xhr.setRequestHeader("Authorization", "Bearer " + token); }
    var started = Date.now();
    var report = function (state) {
      var data = Object.assign({ name: file.name, total: file.size, at: Date.now() }, state);
      setProps("upload-state", { data: data });
      // the server hears only about the end of an upload, not every progress tick
      if (state.phase === "done" || state.phase === "error") { setProps("upload-done", { data: data }); }
    };
    zone.classList.add("ms-uploading");
    report({ phase: "uploading", loaded: 0 });
    var last = 0;
    xhr.upload.onprogress = function (e) {
      var now = Date.now();
      if (now - last < 80 && e.loaded < e.total) { return; }  // a few updates a second is plenty
      last = now;
      report({ phase: "uploading", loaded: e.loaded, total: e.lengthComputable ? e.total : file.size });
    };
    xhr.upload.onload = function () { report({ phase: "validating", loaded: file.size }); };
    xhr.onerror = function () {
      zone.classList.remove("ms-uploading");
      report({ phase: "error", error: "the upload failed: the server could not be reached or closed the connection" });
    };
    xhr.onload = function () {
      zone.classList.remove("ms-uploading");
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status >= 200 && xhr.status < 300) {
        report({ phase: "done", loaded: file.size, checkpoint: body, status: xhr.status,
                 seconds: (Date.now() - started) / 1000 });
      } else {
        report({ phase: "error", status: xhr.status, error: describe(xhr.status, body, xhr.responseText) });
      }
    };
    xhr.send(form);
  }

  function describe(status, body, text) {
    var d = body && body.detail;
    if (Array.isArray(d)) {
      d = d.map(function (x) { return (x.loc ? x.loc.filter(function (p) { return p !== "body"; }).join(".") + ": " : "") + x.msg; }).join("; ");
    }
    if (!d) {
      d = status === 413 ? "the file is larger than this server accepts"
        : status === 401 ? "this server needs a token: enter it at the top of the page"
        : (text || "unexpected answer").slice(0, 300);
    }
    return d + " (HTTP " + status + ")";
  }

  function zoneOf(el) { return el && el.closest ? el.closest(".ms-dropzone") : null; }

  document.addEventListener("dragover", function (ev) {
    var zone = zoneOf(ev.target);
    if (!zone) { return; }
    ev.preventDefault();
    ev.dataTransfer.dropEffect = "copy";
    zone.classList.add("ms-dragover");
  });
  document.addEventListener("dragleave", function (ev) {
    var zone = zoneOf(ev.target);
    if (zone && !zone.contains(ev.relatedTarget)) { zone.classList.remove("ms-dragover"); }
  });
  document.addEventListener("drop", function (ev) {
    var zone = zoneOf(ev.target);
    if (!zone) { return; }
    ev.preventDefault();
    zone.classList.remove("ms-dragover");
    var files = ev.dataTransfer && ev.dataTransfer.files;
    for (var i = 0; files && i < files.length; i++) { uploadFile(zone, files[i]); }
  });
  function chooseFiles(zone) {
    // the file input lives outside React's tree: made on demand, dropped after use
    var input = document.createElement("input");
    input.type = "file";
    input.multiple = true;
    input.accept = ".safetensors,.pt,.pth,.bin,.ckpt,.model";
    input.style.display = "none";
    input.addEventListener("change", function () {
      for (var i = 0; i < input.files.length; i++) { uploadFile(zone, input.files[i]); }
      input.remove();
    });
    document.body.appendChild(input);
    input.click();
  }
  document.addEventListener("click", function (ev) {
    var zone = zoneOf(ev.target);
    if (zone) { chooseFiles(zone); }
  });
  document.addEventListener("keydown", function (ev) {
    var zone = ev.target.classList && ev.target.classList.contains("ms-dropzone") ? ev.target : null;
    if (zone && (ev.key === "Enter" || ev.key === " ")) {
      ev.preventDefault();
      chooseFiles(zone);
    }
  });
})();
