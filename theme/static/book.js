/* EBFlow book: the reader's tools on every page (no dependencies, works from file://).
 * - a "Copy" button on every code block;
 * - the "on this page" contents highlight the section being read;
 * - "/" focuses the search box.
 */
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {  // older browsers, insecure contexts
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (error) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy failed")); }
    });
  }

  function addCopyButtons() {
    document.querySelectorAll(".code-block").forEach(function (block) {
      var pre = block.querySelector("pre");
      if (!pre || block.querySelector(".copy-button")) { return; }
      var button = document.createElement("button");
      button.type = "button";
      button.className = "copy-button";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy this code");
      button.addEventListener("click", function () {
        var code = pre.innerText.replace(/\n$/, "");
        copyText(code).then(function () {
          button.textContent = "Copied";
          button.classList.add("copied");
        }, function () {
          button.textContent = "Press Ctrl+C";
          var range = document.createRange();
          range.selectNodeContents(pre);
          var selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
        }).then(function () {
          window.setTimeout(function () {
            button.textContent = "Copy";
            button.classList.remove("copied");
          }, 1800);
        });
      });
      block.classList.add("has-copy-button");
      block.appendChild(button);
    });
  }

  function followSections() {
    var links = Array.prototype.slice.call(document.querySelectorAll(".page-toc a[href^='#']"));
    if (!links.length) { return; }
    var targets = links.map(function (link) {
      return document.getElementById(decodeURIComponent(link.getAttribute("href").slice(1)));
    });
    var pending = false;
    function update() {
      pending = false;
      var current = -1;
      for (var i = 0; i < targets.length; i++) {
        if (targets[i] && targets[i].getBoundingClientRect().top < 120) { current = i; }
      }
      links.forEach(function (link, i) { link.classList.toggle("active", i === current); });
    }
    window.addEventListener("scroll", function () {
      if (!pending) { pending = true; window.requestAnimationFrame(update); }
    }, {passive: true});
    update();
  }

  function searchShortcut() {
    document.addEventListener("keydown", function (event) {
      if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) { return; }
      var active = document.activeElement;
      if (active && (active.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName))) {
        return;
      }
      var box = document.querySelector(".search-query") || document.querySelector(".search-input");
      if (box) { event.preventDefault(); box.focus(); }
    });
  }

  function start() {
    addCopyButtons();
    followSections();
    searchShortcut();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
