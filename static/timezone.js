// Times are shown in the browser's time zone: tell the server which one it is (the tz cookie,
// read by config.middleware.UserTimezoneMiddleware).
(function () {
  try {
    var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (tz && document.cookie.indexOf("tz=" + tz) === -1) {
      document.cookie = "tz=" + tz + "; path=/; max-age=31536000; samesite=lax";
    }
  } catch (e) {}
})();
