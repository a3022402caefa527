// <form data-confirm="Delete this?">: asks before the form is sent, and sends nothing if the
// person says no. (Pages carry no inline event handlers: the Content-Security-Policy forbids them.)
(function () {
  if (window.conveyorConfirm) return;
  window.conveyorConfirm = true;
  document.addEventListener("submit", function (e) {
    var form = e.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.getAttribute("data-confirm"))) e.preventDefault();
  });
})();
