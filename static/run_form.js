// "Start in [ 10 ] [minutes]": show when the run would start, in the page's date format
// ("30 Nov 2026, 06:07:19", this browser's time zone). The form is swapped by htmx, so listen
// on the document.
(function () {
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  var UNIT_SECONDS = { minutes: 60, hours: 3600, seconds: 1 };

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function when(d) {
    return d.getDate() + " " + MONTHS[d.getMonth()] + " " + d.getFullYear() + ", " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function update() {
    var preview = document.getElementById("delay-preview");
    var delay = document.getElementById("id_delay");
    var unit = document.getElementById("id_delay_unit");
    if (!preview || !delay || !unit) return;
    var amount = parseInt(delay.value, 10);
    if (!(amount > 0)) {
      preview.textContent = "From the moment you press Run later.";
      return;
    }
    var seconds = amount * (UNIT_SECONDS[unit.value] || 60);
    preview.textContent = "Starts about " + when(new Date(Date.now() + seconds * 1000)) + ".";
  }

  document.addEventListener("input", function (event) {
    if (event.target.id === "id_delay" || event.target.id === "id_delay_unit") update();
  });
  document.addEventListener("change", function (event) {
    if (event.target.id === "id_delay_unit") update();
  });
  document.addEventListener("htmx:afterSwap", update);
  document.addEventListener("DOMContentLoaded", update);
})();
