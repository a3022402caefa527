// The schedule form: show only the fields of the chosen kind (all of them stay in the form
// without script).
(function () {
  var form = document.getElementById("schedule-form");
  if (!form) return;
  function show() {
    var checked = form.querySelector("input[name=kind]:checked");
    var kind = checked ? checked.value : "cron";
    form.querySelectorAll("[data-kind]").forEach(function (el) { el.hidden = el.dataset.kind !== kind; });
  }
  form.querySelectorAll("input[name=kind]").forEach(function (el) { el.addEventListener("change", show); });
  show();
})();
