// conversation.js: which turns of the conversation a POST sends back as `messages`.
// No DOM: Node imports it too (tests/node/conversation.test.mjs).

/**
 * The newest turns that fit the server's limits (CHAT_MAX_MESSAGES, CHAT_MAX_CHARS),
 * ending with the new user message. The oldest turns go first, and the result never
 * starts with an assistant turn whose question was dropped. Lengths count UTF-16 code
 * units, never fewer than the server's characters, so a fit here fits there.
 *
 * @param {{role: string, content: string}[]} history the finished turns, oldest first
 * @param {string} text the new user message
 * @param {{messages: number, chars: number}} limits
 */
export function conversation(history, text, limits) {
  const messages = [...history, { role: "user", content: text }];
  let chars = messages.reduce((n, m) => n + m.content.length, 0);
  let start = 0;
  while (start < messages.length - 1
    && (messages.length - start > limits.messages || chars > limits.chars)) {
    chars -= messages[start].content.length;
    start += 1;
  }
  while (start < messages.length - 1 && messages[start].role !== "user") start += 1;
  return messages.slice(start);
}
