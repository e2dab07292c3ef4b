// @qdrant/js-client-grpc as an application uses it: one client, a fixed sequence of calls on one collection,
// every answer printed as JSON on stdout (without Qdrant's `time`, which differs from run to run).
// Usage: node client.mjs '{"url": "http://127.0.0.1:6334", "collection": "docs", "apiKey": "...", "headers": {...}}'
// With "anonymous": true it sends no credential and makes one query, to see the refusal.
import { ConnectError, ConnectErrorCode, QdrantClient } from '@qdrant/js-client-grpc';

const options = JSON.parse(process.argv[2]);
const warnings = [];
console.warn = (...args) => warnings.push(args.join(' ')); // the client's version check reports here

const client = new QdrantClient({ url: options.url, apiKey: options.apiKey, headers: options.headers, timeout: 20000 });
const points = client.api('points');
const collection = options.collection;
const vector = [1.0, 0.2, 0.1, 0.0];
const enable = { selectorOptions: { case: 'enable', value: true } };
const nearest = (data) => ({ variant: { case: 'nearest', value: { variant: { case: 'dense', value: { data } } } } });
const id = (n) => ({ pointIdOptions: { case: 'num', value: BigInt(n) } });

const routedTo = []; // the proxy's x-bluegreen-collection for each call (absent when direct)
const named = (name) => ({
  onHeader: (headers) => routedTo.push([name, headers.get('x-bluegreen-collection')]),
});

function plain(value) {
  return JSON.parse(JSON.stringify(value, (key, item) => {
    if (key === 'time' || key === '$typeName') return undefined;
    return typeof item === 'bigint' ? item.toString() : item;
  }));
}

async function calls() {
  const answers = {};
  answers.health = plain(await client.api('service').healthCheck({}));
  answers.query = plain(await points.query({ collectionName: collection, query: nearest(vector), limit: 3n, withPayload: enable }, named('query')));
  answers.search = plain(await points.search({ collectionName: collection, vector, limit: 3n, withPayload: enable }, named('search')));
  answers.upsert = plain(await points.upsert({
    collectionName: collection,
    wait: true,
    points: [{
      id: id(20),
      vectors: { vectorsOptions: { case: 'vector', value: { data: [0.5, 0.5, 0.5, 0.5] } } },
      payload: { n: { kind: { case: 'integerValue', value: 20n } }, from: { kind: { case: 'stringValue', value: 'js' } } },
    }],
  }, named('upsert')));
  answers.scroll = plain(await points.scroll({ collectionName: collection, limit: 10, withPayload: enable, withVectors: enable }, named('scroll')));
  answers.count = plain(await points.count({ collectionName: collection, exact: true }, named('count')));
  answers.get = plain(await points.get({ collectionName: collection, ids: [id(1), id(20)], withPayload: enable, withVectors: enable }, named('get')));
  answers.queryBatch = plain(await points.queryBatch({
    collectionName: collection,
    queryPoints: [
      { collectionName: collection, query: nearest(vector), limit: 2n },
      { collectionName: collection, query: nearest([0.4, 0.3, 0.2, 0.1]), limit: 2n, withPayload: enable },
    ],
  }, named('queryBatch')));
  return answers;
}

async function anonymous() {
  try {
    await points.query({ collectionName: collection, query: nearest(vector), limit: 3n });
    return { refused: null };
  } catch (error) {
    if (!(error instanceof ConnectError)) throw error;
    return { refused: { code: ConnectErrorCode[error.code], message: error.rawMessage } };
  }
}

let output;
try {
  const answers = options.anonymous ? await anonymous() : await calls();
  // The constructor's version check runs in the background: give it time to report before reading warnings.
  await new Promise((resolve) => setTimeout(resolve, 300));
  output = { answers, routedTo, warnings };
} catch (error) {
  output = { error: String(error), code: error instanceof ConnectError ? ConnectErrorCode[error.code] : null, warnings };
}
process.stdout.write(JSON.stringify(output) + '\n', () => process.exit(0));
