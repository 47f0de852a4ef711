import { createRoot } from "react-dom/client";
import { App } from "./assistant-ui.jsx";

createRoot(document.getElementById("root")).render(<App />);
