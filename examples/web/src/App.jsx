import { useEffect, useState } from "react";

// Build-time settings (Dockerfile ARGs, set by compose.yaml from .env).
const title = import.meta.env.VITE_APP_TITLE ?? "kiln example";
const apiUrl = import.meta.env.VITE_API_URL ?? "/cgi-bin/api";

export function App() {
  const [api, setApi] = useState(null);
  const [built, setBuilt] = useState(null);
  useEffect(() => {
    // The API's package.json, copied in from the api service's image.
    fetch("/api-package.json")
      .then((r) => r.json())
      .then((p) => setBuilt(`${p.name} ${p.version}`))
      .catch(() => setBuilt("unknown"));
    fetch(apiUrl)
      .then((r) => r.json())
      .then(setApi)
      .catch((e) => setApi({ error: String(e) }));
  }, []);
  return (
    <main>
      <h1>{title}</h1>
      <p>Built against {built ?? "…"}</p>
      <pre>{api ? JSON.stringify(api, null, 2) : "asking the API…"}</pre>
    </main>
  );
}
