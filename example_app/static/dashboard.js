// dashboard.js: the live dashboard. One EventSource for three channels, opened with
// last=1 (the newest rate and total arrive at once). On a stream of several channels an
// event's id is a cursor whose part before the first "@" names its channel; presence
// events name theirs in their data, {"channel", "count"}.

const count = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const rate = new Intl.NumberFormat("en-US", { minimumFractionDigits: 4, maximumFractionDigits: 4 });
const money = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

const show = (id, text) => {
  const element = document.getElementById(id);
  if (element.textContent !== text) element.textContent = text;
};

const status = (state, text) => {
  const element = document.getElementById("status");
  element.dataset.state = state;
  element.textContent = text;
};

const source = new EventSource(document.body.dataset.streamUrl);
source.onopen = () => status("live", "live");
source.onerror = () => status(source.readyState === EventSource.CLOSED ? "closed" : "connecting",
  source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…");

source.addEventListener("presence", (event) => {
  const { channel, count: n } = JSON.parse(event.data);
  if (channel === "visitors") show("online", count.format(n));
});

source.onmessage = (event) => {
  const channel = event.lastEventId.split("@")[0];
  const data = JSON.parse(event.data);
  if (channel === "fx.eurusd") {
    show("rate", rate.format(data.rate));
    show("rate-time", `channel fx.eurusd, ${data.time} UTC`);
  } else if (channel === "sales") {
    show("sales", money.format(data.total));
    show("sales-time", `channel sales, today (USD), ${data.time} UTC`);
  }
};
