// The flow form's step editor. The steps are the JSON in the config-steps box, which is what the
// form sends (without script that box alone is the editor). Here they become rows, one per step:
// run an agent, wait, or run several at once, which can be added, removed, moved and filled in.
// Every change is written back to the box, and editing the box by hand redraws the rows.
// Problems the server found ("steps.1.input", "steps.2.parallel.0.agent") show at their row and
// move with it.
(function () {
  var root = document.getElementById("flow-editor");
  var box = document.getElementById("id_config-steps");
  if (!root || !box) return;
  var json = document.getElementById("flow-json");
  var agents = readData("flow-agents") || [];
  var serverProblems = readData("flow-errors") || {};

  var TYPES = [["run", "Run an agent"], ["wait", "Wait"], ["group", "Run in parallel"]];
  var RETRY_MODES = [["inherit", "As set for the flow"], ["off", "No retries"], ["custom", "Custom"]];
  var PROBLEM_RE = /^steps\.(\d+)(?:\.parallel\.(\d+))?(?:\.([a-z_]+))?$/;

  var steps = null; // the steps shown, or null while the box holds no list of steps
  var problems = new WeakMap(); // a step (or a group's step) -> {field: [message]}; "" = itself
  var drafts = new WeakMap(); // a step -> input text that is not valid JSON yet
  var retryModes = new WeakMap(); // a step -> "custom" chosen before any value is typed
  var general = []; // problems that belong to no row
  var hints = []; // [element, step index] of the "earlier steps" hints, kept up to date

  function readData(id) {
    var node = document.getElementById(id);
    try {
      return node ? JSON.parse(node.textContent) : null;
    } catch (e) {
      return null;
    }
  }

  function h(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      var value = attrs[name];
      if (value === null || value === undefined || value === false) return;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else if (name.slice(0, 2) === "on") node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    });
    (children || []).forEach(function (child) {
      if (child) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function isObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  function typeOf(step) {
    if ("parallel" in step) return "group";
    if ("wait" in step) return "wait";
    return "run";
  }

  // A value as a person would type it: on one line when short, else indented.
  function showJSON(value) {
    if (value === undefined) return "";
    var line = oneLine(value);
    return line.length <= 72 ? line : JSON.stringify(value, null, 2);
  }

  function oneLine(value) {
    if (Array.isArray(value)) return "[" + value.map(oneLine).join(", ") + "]";
    if (isObject(value)) {
      return "{" + Object.keys(value).map(function (k) {
        return JSON.stringify(k) + ": " + oneLine(value[k]);
      }).join(", ") + "}";
    }
    return JSON.stringify(value);
  }

  function save() {
    box.value = JSON.stringify(steps, null, 2);
    boxNote("");
  }

  // --- Keys, and what a step can read --------------------------------------------------------

  function keysOf(step, index) {
    if (!isObject(step)) return [];
    var type = typeOf(step);
    if (type === "wait") return [step.key || "wait-" + (index + 1)];
    if (type === "group") {
      var members = Array.isArray(step.parallel) ? step.parallel : [];
      return members.map(function (m) { return isObject(m) ? m.key : null; }).concat([step.key]);
    }
    return [step.key];
  }

  // The keys of the steps before each step (a group's steps see those before the group).
  function earlierKeys() {
    var seen = [];
    return steps.map(function (step, index) {
      var before = seen.filter(function (k) { return typeof k === "string" && k; });
      seen = seen.concat(keysOf(step, index));
      return before;
    });
  }

  function allKeys() {
    var keys = [];
    steps.forEach(function (step, index) { keys = keys.concat(keysOf(step, index)); });
    return keys;
  }

  function freshKey(prefix, start) {
    var taken = allKeys();
    for (var n = start; ; n++) {
      if (taken.indexOf(prefix + n) === -1) return prefix + n;
    }
  }

  function hintText(keys) {
    return "earlier steps: " + (keys.length ? keys.join(", ") : "none") + ".";
  }

  function refreshHints() {
    var earlier = earlierKeys();
    hints.forEach(function (hint) { hint[0].textContent = hintText(earlier[hint[1]]); });
  }

  // --- Problems ------------------------------------------------------------------------------

  function problemsOf(step) {
    if (!problems.has(step)) problems.set(step, {});
    return problems.get(step);
  }

  function addProblem(step, field, messages) {
    var mine = problemsOf(step);
    mine[field] = (mine[field] || []).concat(messages);
  }

  // Hang the server's problems on the steps they name.
  function attachProblems(found) {
    general = [];
    Object.keys(found).forEach(function (path) {
      var match = PROBLEM_RE.exec(path);
      var step = match ? steps[Number(match[1])] : undefined;
      if (!match || !isObject(step)) {
        var where = match ? "Step " + (Number(match[1]) + 1) + ": " : "";
        found[path].forEach(function (m) { general.push(m.indexOf("Step ") === 0 ? m : where + m); });
        return;
      }
      var field = match[3] || "";
      if (match[2] !== undefined) {
        var member = Array.isArray(step.parallel) ? step.parallel[Number(match[2])] : undefined;
        if (isObject(member)) {
          addProblem(member, field, found[path]);
          return;
        }
        field = "parallel";
      }
      addProblem(step, field, found[path]);
    });
  }

  function errorList(messages, extraClass) {
    return h("ul", { className: "errorlist" + (extraClass ? " " + extraClass : "") },
      messages.map(function (m) { return h("li", { text: m }); }));
  }

  // A labelled field, with the server's problems under it (and room for the page's own note).
  function field(id, label, control, messages, help, extraClass) {
    messages = messages || [];
    control.id = id;
    if (messages.length) control.setAttribute("aria-invalid", "true");
    return h("div", { className: "field" + (extraClass ? " " + extraClass : "") + (messages.length ? " has-error" : "") }, [
      h("label", { for: id, text: label }),
      control,
      messages.length ? errorList(messages) : null,
      help || null,
    ]);
  }

  function select(choices, value, onchange, attrs) {
    var node = h("select", Object.assign({ onchange: onchange }, attrs || {}),
      choices.map(function (c) { return h("option", { value: c[0], text: c[1] }); }));
    node.value = value;
    return node;
  }

  // --- The fields of a run step (a step of its own, or one of a group's) -------------------------

  function agentChoices(current) {
    var choices = [["", "Choose an agent…"]];
    var found = false;
    agents.forEach(function (a) {
      choices.push([a.uuid, a.name + (a.kind === "flow" ? " (flow)" : "")]);
      if (a.uuid === current) found = true;
    });
    if (current && !found) {
      // Given by name in the JSON: show that agent; else keep the value and say it is unknown.
      var named = agents.filter(function (a) { return a.name.toLowerCase() === String(current).trim().toLowerCase(); })[0];
      if (named) return { choices: choices, value: named.uuid };
      choices.push([String(current), "“" + current + "” (not one of your agents)"]);
    }
    return { choices: choices, value: current ? String(current) : "" };
  }

  function runFields(step, id, index, mine) {
    var key = h("input", {
      type: "text", value: step.key || "", autocomplete: "off", spellcheck: "false",
      oninput: function () {
        if (this.value.trim()) step.key = this.value.trim();
        else delete step.key;
        save();
        refreshHints();
      },
    });
    var agentsFound = agentChoices(step.agent);
    var agent = select(agentsFound.choices, agentsFound.value, function () {
      step.agent = this.value;
      save();
    });
    var noAgents = agents.length ? null : h("div", { className: "help", text: "You have no other agents yet: create the agents this flow runs first." });

    var input = h("textarea", { spellcheck: "false", placeholder: '{"url": "{{ input.url }}"}' });
    input.value = drafts.has(step) ? drafts.get(step) : showJSON(step.input);
    input.rows = Math.min(Math.max(input.value.split("\n").length, 2), 12);
    var note = h("ul", { className: "errorlist" }); // in the page while the text is not JSON
    var hint = h("span");
    hints.push([hint, index]);
    var help = h("div", { className: "help" }, [
      "JSON, blank for none. Read ", h("code", { text: "{{ input.x }}" }), " or ",
      h("code", { text: "{{ steps.<key>.result.y }}" }), "; ", hint,
    ]);
    // Text that is not JSON yet stays in its box (and is marked: the form is not sent with it);
    // the definition keeps the last input that was.
    function check(write) {
      var text = input.value;
      note.remove();
      delete input.dataset.draft;
      if (!text.trim()) {
        delete step.input;
        drafts.delete(step);
      } else {
        try {
          step.input = JSON.parse(text);
          drafts.delete(step);
        } catch (e) {
          drafts.set(step, text);
          input.dataset.draft = "true";
          note.textContent = "";
          note.appendChild(h("li", { text: "This is not valid JSON yet (" + e.message + "); the definition keeps the last valid input." }));
          input.insertAdjacentElement("afterend", note);
          return;
        }
      }
      if (write) save();
    }
    input.addEventListener("input", function () { check(true); });
    var inputField = field(id + "-input", "Input (JSON)", input, mine.input, help, "editor-input");
    if (drafts.has(step)) check(false);

    return [
      h("div", { className: "form-row" }, [
        field(id + "-key", "Key", key, mine.key),
        field(id + "-agent", "Agent", agent, mine.agent, noAgents),
      ]),
      inputField,
      retryFields(step, id, mine.retry),
    ];
  }

  function retryMode(step) {
    var retry = step.retry;
    if (isObject(retry) && retry.enabled === false) return "off";
    if (isObject(retry) && Object.keys(retry).length) return "custom";
    if (retry !== undefined && retry !== null && !isObject(retry)) return "custom";
    return retryModes.get(step) || "inherit";
  }

  function retryFields(step, id, messages) {
    var mode = retryMode(step);
    var retry = isObject(step.retry) ? step.retry : {};
    var numbers = [];
    function number(name, label, max) {
      var control = h("input", {
        type: "number", min: 0, max: max, inputmode: "numeric",
        value: retry[name] === undefined ? "" : String(retry[name]),
        oninput: function () {
          var text = this.value.trim();
          if (!isObject(step.retry)) step.retry = {};
          if (!text) delete step.retry[name];
          else step.retry[name] = isFinite(Number(text)) ? Number(text) : text;
          save();
        },
      });
      var wrap = field(id + "-" + name, label, control, null, null);
      wrap.hidden = mode !== "custom";
      numbers.push(wrap);
      return wrap;
    }
    var choice = select(RETRY_MODES, mode, function () {
      retryModes.set(step, this.value);
      if (this.value === "inherit") delete step.retry;
      else if (this.value === "off") step.retry = { enabled: false };
      else {
        var kept = isObject(step.retry) ? step.retry : {};
        delete kept.enabled;
        step.retry = kept;
      }
      numbers.forEach(function (n) { n.hidden = choice.value !== "custom"; });
      help.textContent = HELP[choice.value];
      save();
    });
    var HELP = {
      inherit: "The flow's retry settings, else those of the agent it runs.",
      off: "A failure of this step fails the flow.",
      custom: "Blank: the flow's value, else the agent's.",
    };
    var help = h("div", { className: "help", text: HELP[mode] });
    return h("div", { className: "editor-retry" + (messages && messages.length ? " has-error" : "") }, [
      h("div", { className: "form-row" }, [
        field(id + "-retry", "Retries", choice, null, null),
        number("max_retries", "Retries at most (0–10)", 10),
        number("backoff", "First retry after (s)", null),
      ]),
      messages && messages.length ? errorList(messages) : null,
      help,
    ]);
  }

  // --- A row ---------------------------------------------------------------------------------

  function tools(label, index, count, move, remove) {
    return h("div", { className: "editor-tools" }, [
      move ? h("button", {
        type: "button", className: "btn btn-small", "data-action": "up", "aria-label": "Move " + label + " up",
        title: "Move up", text: "↑", disabled: index === 0, onclick: function () { move(index, -1); },
      }) : null,
      move ? h("button", {
        type: "button", className: "btn btn-small", "data-action": "down", "aria-label": "Move " + label + " down",
        title: "Move down", text: "↓", disabled: index === count - 1, onclick: function () { move(index, 1); },
      }) : null,
      h("button", {
        type: "button", className: "btn btn-small", "data-action": "remove", "aria-label": "Remove " + label,
        text: "Remove", onclick: function () { remove(index); },
      }),
    ]);
  }

  function stepRow(step, index) {
    var n = index + 1;
    var id = "flow-" + n;
    var row = h("li", { className: "editor-step", id: "flow-step-" + n });
    if (!isObject(step)) {
      row.appendChild(h("div", { className: "editor-head" }, [
        h("span", { className: "editor-number", text: "Step " + n }),
        tools("step " + n, index, steps.length, moveStep, removeStep),
      ]));
      row.appendChild(h("p", { className: "muted small", text: "This step is not a JSON object: edit it in the definition as JSON below, or remove it." }));
      return row;
    }
    var mine = problems.get(step) || {};
    var type = typeOf(step);
    var typeSelect = select(TYPES, type, function () { changeType(index, this.value); }, {
      "aria-label": "Step " + n + ": what it does", "data-role": "type",
    });
    row.appendChild(h("div", { className: "editor-head" }, [
      h("span", { className: "editor-number", text: "Step " + n }),
      typeSelect,
      tools("step " + n, index, steps.length, moveStep, removeStep),
    ]));
    if (mine[""]) row.appendChild(errorList(mine[""]));
    if (Object.keys(mine).length) row.classList.add("has-problems");
    if (type === "run") runFields(step, id, index, mine).forEach(function (n) { row.appendChild(n); });
    else if (type === "wait") row.appendChild(waitFields(step, id, index, mine));
    else groupFields(step, id, index, mine).forEach(function (n) { row.appendChild(n); });
    return row;
  }

  function waitFields(step, id, index, mine) {
    var wait = isObject(step.wait) ? step.wait : {};
    var mode = "until" in wait ? "until" : "seconds";
    var key = h("input", {
      type: "text", value: step.key || "", placeholder: "wait-" + (index + 1), autocomplete: "off", spellcheck: "false",
      oninput: function () {
        if (this.value.trim()) step.key = this.value.trim();
        else delete step.key;
        save();
        refreshHints();
      },
    });
    var seconds = h("input", {
      type: "number", min: 1, inputmode: "numeric", value: wait.seconds === undefined ? "" : String(wait.seconds),
      oninput: function () {
        var text = this.value.trim();
        step.wait = text ? { seconds: isFinite(Number(text)) ? Number(text) : text } : {};
        save();
      },
    });
    var until = h("input", {
      type: "text", value: typeof wait.until === "string" ? wait.until : "", spellcheck: "false",
      placeholder: "2026-12-01T09:00:00Z or {{ steps.<key>.result.at }}",
      oninput: function () {
        step.wait = { until: this.value };
        save();
      },
    });
    var hint = h("span");
    hints.push([hint, index]);
    var secondsField = field(id + "-seconds", "Seconds", seconds, mode === "seconds" ? mine.wait : null);
    var untilField = field(id + "-until", "Until", until, mode === "until" ? mine.wait : null,
      h("div", { className: "help" }, ["A time (ISO 8601) or a reference to one; ", hint]));
    secondsField.hidden = mode !== "seconds";
    untilField.hidden = mode !== "until";
    var how = select([["seconds", "For a number of seconds"], ["until", "Until a time"]], mode, function () {
      step.wait = this.value === "until" ? { until: until.value } : (seconds.value ? { seconds: Number(seconds.value) } : {});
      secondsField.hidden = this.value !== "seconds";
      untilField.hidden = this.value !== "until";
      save();
    });
    return h("div", { className: "form-row" }, [
      field(id + "-key", "Key (optional)", key, mine.key),
      field(id + "-wait", "Wait", how, null),
      secondsField,
      untilField,
    ]);
  }

  function groupFields(step, id, index, mine) {
    var members = Array.isArray(step.parallel) ? step.parallel : null;
    var key = h("input", {
      type: "text", value: step.key || "", autocomplete: "off", spellcheck: "false",
      oninput: function () {
        if (this.value.trim()) step.key = this.value.trim();
        else delete step.key;
        save();
        refreshHints();
      },
    });
    var nodes = [h("div", { className: "form-row" }, [
      field(id + "-key", "Key of the group", key, mine.key,
        h("div", { className: "help", text: "Its result holds its steps' results, by key." })),
    ])];
    if (!members) {
      nodes.push(h("p", { className: "muted small", text: "Its steps are not a list: edit them in the definition as JSON below." }));
      if (mine.parallel) nodes.push(errorList(mine.parallel));
      return nodes;
    }
    var list = h("ol", { className: "editor-members", "aria-label": "Steps of group " + (index + 1) });
    members.forEach(function (member, j) {
      var label = "step " + (j + 1) + " of group " + (index + 1);
      var item = h("li", { className: "editor-member", id: "flow-step-" + (index + 1) + "-" + (j + 1) });
      function removeMember(at) {
        members.splice(at, 1);
        save();
        render();
        focusIn("flow-step-" + (index + 1), "[data-action=add-member]");
      }
      item.appendChild(h("div", { className: "editor-head" }, [
        h("span", { className: "editor-number", text: (index + 1) + "." + (j + 1) }),
        tools(label, j, members.length, null, removeMember),
      ]));
      if (!isObject(member) || typeOf(member) !== "run") {
        item.appendChild(h("p", { className: "muted small", text: "A step of a group runs an agent: edit this one in the definition as JSON below, or remove it." }));
      } else {
        var theirs = problems.get(member) || {};
        if (theirs[""]) item.appendChild(errorList(theirs[""]));
        runFields(member, id + "-" + (j + 1), index, theirs).forEach(function (n) { item.appendChild(n); });
      }
      list.appendChild(item);
    });
    nodes.push(list);
    if (mine.parallel) nodes.push(errorList(mine.parallel));
    nodes.push(h("button", {
      type: "button", className: "btn btn-small", "data-action": "add-member", text: "Add a step to the group",
      onclick: function () {
        members.push({ key: freshKey((step.key || "step") + "-", members.length + 1), agent: "" });
        save();
        render();
        focusIn("flow-step-" + (index + 1) + "-" + members.length, "input");
      },
    }));
    return nodes;
  }

  // --- Changes to the list -------------------------------------------------------------------

  function focusIn(rowId, selector) {
    var row = document.getElementById(rowId);
    var target = row && row.querySelector(selector);
    if (target) target.focus();
  }

  function addStep() {
    steps.push({ key: freshKey("step-", steps.length + 1), agent: "" });
    save();
    render();
    focusIn("flow-step-" + steps.length, "input");
  }

  function removeStep(index) {
    steps.splice(index, 1);
    save();
    render();
    if (steps.length) focusIn("flow-step-" + Math.min(index + 1, steps.length), "[data-action=remove]");
    else focusIn("flow-editor", "[data-action=add]");
  }

  function moveStep(index, by) {
    var to = index + by;
    var step = steps[index];
    steps[index] = steps[to];
    steps[to] = step;
    save();
    render();
    var row = document.getElementById("flow-step-" + (to + 1));
    var button = row && row.querySelector("[data-action=" + (by < 0 ? "up" : "down") + "]");
    if (button && button.disabled) button = row.querySelector("[data-action=" + (by < 0 ? "down" : "up") + "]");
    if (button) button.focus();
  }

  // A step of another type keeps its key; a run step and a group's first step trade places.
  function changeType(index, type) {
    var old = steps[index];
    var key = old.key;
    var step;
    if (type === "wait") step = { key: key, wait: { seconds: 60 } };
    else if (type === "group") {
      var first = typeOf(old) === "run" ? Object.assign({}, old) : { agent: "" };
      first.key = (key || "step") + "-1";
      step = { key: key || freshKey("group-", index + 1), parallel: [first] };
    } else {
      var member = typeOf(old) === "group" && Array.isArray(old.parallel) && isObject(old.parallel[0]) ? old.parallel[0] : {};
      step = Object.assign({ agent: "" }, member, { key: key || freshKey("step-", index + 1) });
    }
    if (step.key === undefined) delete step.key;
    steps[index] = step;
    save();
    render();
    focusIn("flow-step-" + (index + 1), "[data-role=type]");
  }

  // --- Drawing, and following the box ----------------------------------------------------------

  function render() {
    root.textContent = "";
    hints = [];
    if (general.length) root.appendChild(errorList(general, "editor-general"));
    var list = h("ol", { className: "editor-steps" });
    steps.forEach(function (step, index) { list.appendChild(stepRow(step, index)); });
    root.appendChild(list);
    if (!steps.length) root.appendChild(h("p", { className: "muted small", text: "No steps yet: a flow needs at least one." }));
    root.appendChild(h("div", { className: "actions" }, [
      h("button", { type: "button", className: "btn", "data-action": "add", text: "Add step", onclick: addStep }),
    ]));
    refreshHints();
  }

  function boxNote(message) {
    var note = document.getElementById("flow-json-note");
    if (!message) {
      if (note) note.remove();
      return;
    }
    if (!note) {
      note = h("ul", { className: "errorlist", id: "flow-json-note" });
      box.insertAdjacentElement("afterend", note);
    }
    note.textContent = "";
    note.appendChild(h("li", { text: message }));
  }

  function parseBox() {
    var text = box.value;
    if (!text.trim()) return { steps: [] };
    try {
      var value = JSON.parse(text);
      if (!Array.isArray(value)) return { problem: "The definition is a JSON list of steps: [ {…}, {…} ]." };
      return { steps: value };
    } catch (e) {
      return { problem: "This is not valid JSON yet (" + e.message + ")." };
    }
  }

  function showUnreadable() {
    root.textContent = "";
    root.appendChild(h("p", { className: "notice notice-warn small", text: "The steps show here once the definition as JSON below is a valid list of steps." }));
  }

  function followBox() {
    var parsed = parseBox();
    if (parsed.problem) {
      boxNote(parsed.problem + " The steps above show the last valid definition.");
      return;
    }
    boxNote("");
    // Problems stay with the step at the same place.
    var before = steps || [];
    steps = parsed.steps;
    steps.forEach(function (step, index) {
      if (isObject(step) && isObject(before[index]) && problems.has(before[index])) {
        problems.set(step, problems.get(before[index]));
      }
    });
    render();
  }

  // ``first``: on page load (later, when the box first holds a list, the person is typing in
  // it: it stays open).
  function start(first) {
    var parsed = parseBox();
    root.hidden = false;
    if (parsed.problem) {
      showUnreadable();
      return;
    }
    steps = parsed.steps;
    attachProblems(serverProblems);
    render();
    // The rows show the problems now; the list under the box is for pages without script.
    document.querySelectorAll("[data-flow-nojs]").forEach(function (node) { node.remove(); });
    var field = box.closest(".field");
    var help = field && field.querySelector(".help");
    if (help) help.textContent = "The rows above write this; edit it here and they follow.";
    if (first && json && !(field && field.classList.contains("has-error"))) json.open = false;
  }

  var timer = null;
  box.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () {
      if (steps === null) {
        if (!parseBox().problem) start(false);
        return;
      }
      followBox();
    }, 250);
  });

  // Input that is not valid JSON yet would be left out of the definition: say so, send nothing.
  box.form.addEventListener("submit", function (event) {
    var draft = root.querySelector("textarea[data-draft]");
    if (!draft) return;
    event.preventDefault();
    draft.focus();
    draft.scrollIntoView({ block: "center" });
  });

  start(true);
})();
