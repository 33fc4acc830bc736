import { useState } from 'react'

export function label(count: number): string {
  return `count is ${count}`
}

export default function App() {
  const [count, setCount] = useState(0)
  return (
    <main>
      <h1>kiln bench: react-vite</h1>
      <button onClick={() => setCount((c) => c + 1)}>{label(count)}</button>
    </main>
  )
}
