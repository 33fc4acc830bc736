import { expect, test } from 'vitest'
import { label } from './App'

test('label', () => {
  expect(label(2)).toBe('count is 2')
})
