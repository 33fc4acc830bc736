import { useState } from 'react';

export default function App() {
  const [n, setN] = useState(0);
  return (
    <main>
      <h1>kiln bench: create-react-app</h1>
      <button onClick={() => setN(n + 1)}>clicked {n} times</button>
    </main>
  );
}
