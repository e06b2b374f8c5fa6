/* mPanel's only hand-written script: copy buttons, chart tooltips, "what ran at this minute"
   on a chart click, and the servers table's live refresh (what rows it shows, and the times
   in them counting on). Progressive: every page works without it. Served from /static
   so the Content-Security-Policy (default-src 'self') needs no inline script. */
(function () {
  "use strict";
  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

  /* Mirrors panel/units.py so a tooltip reads like the axis next to it. */
  function size(value) {
    var magnitude = Math.abs(value), index = 0;
    while (magnitude >= 1024 && index < UNITS.length - 1) { magnitude /= 1024; index++; }
    if (index === 0) return Math.round(value) + " B";
    var digits = magnitude < 10 ? 2 : magnitude < 100 ? 1 : 0;
    return (value < 0 ? "-" : "") + magnitude.toFixed(digits) + " " + UNITS[index];
  }
  function format(value, unit) {
    if (value === null || value === undefined) return "–";
    if (unit === "percent") return value.toFixed(1) + " %";
    if (unit === "bytes") return size(value);
    if (unit === "rate") return size(value) + "/s";
    if (unit === "count") return Math.round(value).toLocaleString("en-US");
    if (unit === "per_second") return (value >= 100 ? Math.round(value).toLocaleString("en-US")
      : value.toFixed(value >= 1 ? 1 : 2)) + "/s";
    if (unit === "celsius") return value.toFixed(1) + " °C";
    return value.toFixed(2);
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function utc(seconds) {
    var d = new Date(seconds * 1000);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) +
      " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
  }

  /* ----- copy buttons ----- */
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.textContent;
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { select(source); });
    } else {
      select(source);
      try { if (document.execCommand("copy")) done(); } catch (e) { /* selected: Ctrl+C */ }
    }
  });
  function select(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  /* ----- chart tooltips ----- */
  function chartData(figure) {
    if (!figure._data) {
      figure._data = {
        values: JSON.parse(figure.getAttribute("data-values")),
        labels: JSON.parse(figure.getAttribute("data-labels")),
        start: Number(figure.getAttribute("data-start")),
        step: Number(figure.getAttribute("data-step")),
        unit: figure.getAttribute("data-unit")
      };
    }
    return figure._data;
  }
  function binAt(figure, clientX) {
    var svg = figure.querySelector("svg.chart-svg");
    var box = svg.getBoundingClientRect();
    var data = chartData(figure);
    var fraction = (clientX - box.left) / box.width;
    var index = Math.floor(fraction * data.values.length);
    if (index < 0 || index >= data.values.length) return null;
    return { index: index, box: box, data: data, fraction: (index + 0.5) / data.values.length };
  }
  document.addEventListener("mousemove", function (event) {
    var figure = event.target.closest && event.target.closest("figure.chart");
    document.querySelectorAll("figure.chart .tip:not([hidden])").forEach(function (tip) {
      if (!figure || tip.parentNode !== figure) tip.hidden = true;
    });
    if (!figure) return;
    var at = binAt(figure, event.clientX);
    var tip = figure.querySelector(".tip");
    if (!at || !tip) return;
    var row = at.data.values[at.index];
    var time = at.data.start + at.index * at.data.step;
    var lines = [utc(time) + (at.data.step > 60 ? " +" + Math.round(at.data.step / 60) + " min" : "")];
    at.data.labels.forEach(function (label, i) {
      var mean = row ? row[2 * i] : null, peak = row ? row[2 * i + 1] : null;
      var text = label + ": " + format(mean, at.data.unit);
      if (peak !== null && mean !== null && peak > mean) text += " (peak " + format(peak, at.data.unit) + ")";
      lines.push(text);
    });
    if (!row) lines.push("no data");
    tip.textContent = "";
    lines.forEach(function (line, i) {
      var div = document.createElement("div");
      if (i === 0) div.className = "tip-time";
      div.textContent = line;
      tip.appendChild(div);
    });
    tip.hidden = false;
    var figureBox = figure.getBoundingClientRect();
    var x = at.box.left - figureBox.left + at.fraction * at.box.width;
    tip.style.left = Math.min(Math.max(x - tip.offsetWidth / 2, 0), figureBox.width - tip.offsetWidth) + "px";
    var cursor = figure.querySelector("line.cursor");
    if (!cursor) {
      cursor = document.createElementNS("http://www.w3.org/2000/svg", "line");
      cursor.setAttribute("class", "cursor");
      cursor.setAttribute("y1", "8");
      cursor.setAttribute("y2", "144");
      figure.querySelector("svg.chart-svg").appendChild(cursor);
    }
    cursor.setAttribute("x1", (at.fraction * 100).toFixed(2) + "%");
    cursor.setAttribute("x2", (at.fraction * 100).toFixed(2) + "%");
  });

  /* ----- a click on a chart: the processes and services of that minute ----- */
  document.addEventListener("click", function (event) {
    var figure = event.target.closest && event.target.closest("figure.chart");
    var holder = figure && figure.closest("[data-processes-url]");
    if (!holder || !window.htmx) return;
    var at = binAt(figure, event.clientX);
    if (!at) return;
    var time = at.data.start + at.index * at.data.step + at.data.step - 60;
    var url = holder.getAttribute("data-processes-url") + "?at=" + Math.floor(time);
    window.htmx.ajax("GET", url, { target: "#processes", swap: "outerHTML" });
    var card = document.getElementById("processes-card");
    if (card) card.scrollIntoView({ behavior: "smooth", block: "start" });
  });
  /* ----- the servers table: refresh what changed, keep its times counting ----- */
  /* The table's refresh (views.refresh_servers) sends the versions of the rows this page
     shows, in order, and its summary's; the panel answers with the rows that differ (or 204). */
  document.addEventListener("htmx:configRequest", function (event) {
    var body = event.detail.elt;
    if (body.id !== "server-rows") return;
    var versions = [];
    body.querySelectorAll("tr[data-v]").forEach(function (row) {
      versions.push(row.getAttribute("data-v"));
    });
    event.detail.parameters.have = versions.join("");
    var summary = document.getElementById("summary");
    event.detail.parameters.summary = summary ? summary.getAttribute("data-v") : "";
  });

  /* Mirrors panel/units.py's ago() and duration(). */
  function ago(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var steps = [["d", 86400], ["h", 3600], ["min", 60]];
    for (var i = 0; i < steps.length; i++) {
      var size = steps[i][1];
      if (seconds >= size) return Math.floor(seconds / size) + " " + steps[i][0] + " ago";
    }
    return seconds + " s ago";
  }
  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var days = Math.floor(seconds / 86400), hours = Math.floor(seconds % 86400 / 3600),
      minutes = Math.floor(seconds % 3600 / 60);
    if (days) return hours ? days + " d " + hours + " h" : days + " d";
    if (hours) return minutes ? hours + " h " + minutes + " min" : hours + " h";
    if (minutes) return minutes + " min";
    return seconds + " s";
  }
  /* The rows' times are the panel's; the browser's clock may be off from it, by as much as
     the panel's "now" in the table differed from this clock when the table came. */
  var clockOffset = 0;
  function readClock() {
    var body = document.getElementById("server-rows");
    var now = body && parseFloat(body.getAttribute("data-now"));
    if (now && body.getAttribute("data-clock-read") !== "1") {
      clockOffset = now * 1000 - Date.now();
      body.setAttribute("data-clock-read", "1");
    }
  }
  function tick() {
    readClock();
    var now = Date.now() + clockOffset;
    document.querySelectorAll("#server-rows time[datetime]").forEach(function (element) {
      var at = Date.parse(element.getAttribute("datetime"));
      if (isNaN(at)) return;
      var text = element.hasAttribute("data-ago") ? ago((now - at) / 1000)
        : element.hasAttribute("data-in") ? duration((at - now) / 1000) : null;
      if (text !== null && element.textContent !== text) element.textContent = text;
    });
  }
  setInterval(tick, 5000);
  document.addEventListener("htmx:afterSettle", tick);
})();
