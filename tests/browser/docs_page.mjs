// The docs pages in headless Chromium, with every request to another origin blocked and recorded:
// Swagger UI at /docs is authorized through its Authorize dialog (the OAuth2 password flow) and runs
// "Try it out" on GET /api/v1/user; ReDoc at /redoc renders. Prints a JSON report on stdout, with the
// console errors of each page (where Chromium reports Content-Security-Policy refusals).
//
//   node tests/browser/docs_page.mjs BASE_URL USERNAME PASSWORD
//
// playwright-core comes from ./.tools (npm install --prefix .tools playwright-core), the browser from
// Debian's chromium package (CONDUIT_CHROMIUM overrides /usr/bin/chromium).
import { createRequire } from "node:module";

const require = createRequire(new URL("../../.tools/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const [base, username, password] = process.argv.slice(2);
const origin = new URL(base).origin;
const PATIENCE = 30_000; // ms: bounds each wait so that a missing element fails instead of hanging

const report = { foreignRequests: [], consoleErrors: { docs: [], redoc: [] }, pageErrors: [] };
let current = "docs";
const browser = await chromium.launch({
  executablePath: process.env.CONDUIT_CHROMIUM || "/usr/bin/chromium",
  // Without the background-networking flags Chromium keeps calling home, which this test would block.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const context = await browser.newContext();
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) return route.continue();
    report.foreignRequests.push(url);
    return route.abort("blockedbyclient");
  });
  const page = await context.newPage();
  page.setDefaultTimeout(PATIENCE);
  // CSP violations and failed loads are reported as console errors.
  page.on("console", (message) => {
    if (message.type() === "error") report.consoleErrors[current].push(message.text());
  });
  page.on("pageerror", (error) => report.pageErrors.push(String(error)));

  await page.goto(`${base}/docs`);
  await page.locator(".swagger-ui .information-container .title").waitFor();
  report.swaggerTitle = (await page.locator(".swagger-ui .information-container .title").innerText()).trim();

  // Authorize: the OAuth2 scheme's form in the dialog posts the password grant to its tokenUrl.
  await page.locator(".auth-wrapper button.authorize").click();
  const oauth2 = page.locator(".modal-ux .auth-container").filter({ hasText: /OAuth2.*password/ });
  await oauth2.locator("#oauth_username").fill(username);
  await oauth2.locator("#oauth_password").fill(password);
  const token = page.waitForResponse((response) => response.url() === `${base}/api/v1/auth/token`);
  await oauth2.locator("button.authorize").click();
  report.tokenStatus = (await token).status();
  await oauth2.locator("button", { hasText: "Logout" }).waitFor(); // shown once authorized
  await page.locator(".modal-ux button.btn-done").first().click();

  // Try it out on GET /api/v1/user, which needs the token.
  const operation = page
    .locator(".opblock-get")
    .filter({ has: page.locator('.opblock-summary-path[data-path="/api/v1/user"]') });
  await operation.locator(".opblock-summary").click();
  await operation.locator("button.try-out__btn").click();
  const call = page.waitForResponse(
    (response) => response.url() === `${base}/api/v1/user` && response.request().method() === "GET",
  );
  await operation.locator("button.execute").click();
  const response = await call;
  report.userStatus = response.status();
  report.authorizationScheme = (response.request().headers()["authorization"] || "").split(" ")[0];
  report.username = (await response.json()).user?.username;
  const shown = operation.locator(".live-responses-table tbody .response-col_status").first();
  report.shownStatus = (await shown.innerText()).trim();

  current = "redoc";
  await page.goto(`${base}/redoc`);
  await page.locator(".api-info h1").waitFor();
  report.redocTitle = (await page.locator(".api-info h1").innerText()).trim();
} catch (error) {
  report.error = String(error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
