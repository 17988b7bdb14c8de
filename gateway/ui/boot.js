// Loaded first, as a classic script: keeps every script error, rejected promise, failed asset
// and Content-Security-Policy violation in window.__stranglerErrors, so a test (or a person in
// the console) can read what went wrong without the browser's log.
(function () {
  var errors = [];
  window.__stranglerErrors = errors;
  function keep(what) {
    errors.push(String(what));
  }
  window.addEventListener('error', function (e) {
    if (e.target && e.target !== window && (e.target.src || e.target.href)) {
      keep('failed to load ' + (e.target.src || e.target.href));
    } else {
      keep((e.message || 'error') + (e.filename ? ' at ' + e.filename + ':' + e.lineno : ''));
    }
  }, true);
  window.addEventListener('unhandledrejection', function (e) {
    keep('unhandled rejection: ' + (e.reason && e.reason.stack ? e.reason.stack : e.reason));
  });
  window.addEventListener('securitypolicyviolation', function (e) {
    keep('CSP violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline'));
  });
  var consoleError = console.error;
  console.error = function () {
    keep(Array.prototype.join.call(arguments, ' '));
    return consoleError.apply(console, arguments);
  };
})();
