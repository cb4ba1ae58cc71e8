// The theme before the page paints: the saved choice, else the system's. Loaded from <head>, not a module.
(function () {
  var saved = null;
  try { saved = localStorage.getItem("tokenlens-theme"); } catch (e) {}
  var dark = saved ? saved === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
})();
