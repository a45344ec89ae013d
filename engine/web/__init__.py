"""The studio page that `reel serve` serves (package data: index.html, app.js, style.css)."""
